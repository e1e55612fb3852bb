"""Where a command writes, checked before it runs anything: an output folder that is a file, a report path that is a
folder, a run folder that already holds checkpoints (which a fresh run would overwrite from step 0), what
`--resume_from_checkpoint` names, and a checkpoint that already reached `max_steps`. Each problem is one `ValueError`
line naming the value and what would work."""

from __future__ import annotations

import json
import re
from pathlib import Path

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0", "none", "")
REPORT_NAME = "eval_report.json"  # the report's name when `--output` is a folder


def check_output_folder(path: str | Path, field: str) -> Path:
    """`path` as a folder to write into: it may exist (as a folder) or not; a file there is refused."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{field}={str(path)!r} is a file; expected a folder to write into (existing or new).")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{field}={str(path)!r} cannot be created: {str(parent)!r} is a file.")
            break
    return path


def report_path(output: str | Path | None) -> Path | None:
    """The file a JSON report goes to: `output` itself, or `output/eval_report.json` when it is a folder."""
    if output is None:
        return None
    output = Path(output)
    if output.is_dir():
        return output / REPORT_NAME
    check_output_folder(output.parent, "--output (its folder)")
    return output


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """The `checkpoint-N` folders of `output_dir` that were written to the end (`trainer_state.json` is written
    last), oldest first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [
        (int(m.group(1)), child)
        for child in folder.iterdir()
        if (m := _CHECKPOINT.match(child.name)) and (child / "trainer_state.json").is_file()
    ]
    return [path for _, path in sorted(found)]


def resolve_resume(output_dir: str | Path, resume: str | bool | None) -> str | None:
    """The checkpoint folder to resume from (None: start at step 0).

    `true` means the newest complete checkpoint of `output_dir` (as `Trainer.train(resume_from_checkpoint=True)`).
    Starting at step 0 in an `output_dir` that holds checkpoints is refused: it would overwrite them silently.
    """
    text = str(resume).strip() if resume is not None else ""
    if text.lower() in _FALSE:
        existing = complete_checkpoints(output_dir)
        if existing:
            names = ", ".join(p.name for p in existing[-3:])
            raise ValueError(
                f"output_dir={str(output_dir)!r} already holds checkpoints ({names}); a new run would start at step "
                "0 and overwrite them. Resume the newest with --resume_from_checkpoint true (or give a checkpoint "
                "folder), or choose another output_dir."
            )
        return None
    if text.lower() in _TRUE:
        existing = complete_checkpoints(output_dir)
        if not existing:
            raise ValueError(
                f"resume_from_checkpoint=true: output_dir={str(output_dir)!r} holds no complete checkpoint-N folder "
                "(one with trainer_state.json); give a checkpoint folder, or leave resume_from_checkpoint unset."
            )
        return str(existing[-1])
    return str(check_checkpoint_folder(text))


def check_checkpoint_folder(path: str | Path) -> Path:
    """A folder `Trainer` can resume from (it has `trainer_state.json`); a model folder or a missing path is
    refused with what it is."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"resume_from_checkpoint={str(path)!r} does not exist; expected a checkpoint-N folder.")
    if not path.is_dir():
        raise ValueError(f"resume_from_checkpoint={str(path)!r} is a file; expected a checkpoint-N folder.")
    if (path / "trainer_state.json").is_file():
        return path
    inside = complete_checkpoints(path)
    if inside:
        raise ValueError(
            f"resume_from_checkpoint={str(path)!r} is a run folder, not a checkpoint; give one of its checkpoints "
            f"(newest: {str(inside[-1])!r}), or --resume_from_checkpoint true with --output_dir {str(path)!r}."
        )
    if (path / "config.json").is_file() or (path / "adapter_config.json").is_file():
        raise ValueError(
            f"resume_from_checkpoint={str(path)!r} is a model folder, not a training checkpoint (no "
            "trainer_state.json): to start training from this model, pass it as --model_name_or_path instead."
        )
    raise ValueError(
        f"resume_from_checkpoint={str(path)!r} is not a training checkpoint (no trainer_state.json); expected an "
        "output_dir/checkpoint-N folder."
    )


def checkpoint_step(checkpoint: str | Path) -> int:
    """The optimizer step a complete checkpoint was saved at (its `trainer_state.json`'s `global_step`)."""
    return int(json.loads((Path(checkpoint) / "trainer_state.json").read_text()).get("global_step", 0))


def check_resume_step(checkpoint: str | None, max_steps: int) -> None:
    """Refuse to resume from a checkpoint saved at `max_steps` or later: `Trainer` checks the step count only after
    a step, so it would train one step past `max_steps` (a run killed between its last checkpoint and its final save
    ends up here)."""
    if checkpoint is None or max_steps <= 0:
        return
    step = checkpoint_step(checkpoint)
    if step >= max_steps:
        raise ValueError(
            f"resume_from_checkpoint={str(checkpoint)!r} was saved at step {step} and max_steps={max_steps}: that "
            f"run trained every step already (only its final save is missing), and resuming would train step "
            f"{step + 1}. Resume from an earlier checkpoint of the run (resuming repeats the same steps exactly), "
            "or raise max_steps to train further."
        )


def check_run_outputs(output_dir: str | Path, resume: str | bool | None, max_steps: int = -1) -> str | None:
    """Check `output_dir` and `resume_from_checkpoint` before anything loads (train and sft); returns the checkpoint
    to resume from (`true` resolved to the newest complete one)."""
    check_output_folder(output_dir, "output_dir")
    checkpoint = resolve_resume(output_dir, resume)
    check_resume_step(checkpoint, max_steps)
    return checkpoint


def train_saying_how_to_resume(command: str, trainer, output_dir: str | Path, resume: str | None) -> None:
    """`trainer.train(resume_from_checkpoint=resume)`; Ctrl-C ends with `interrupted_message` instead of a
    traceback."""
    try:
        trainer.train(resume_from_checkpoint=resume)
    except KeyboardInterrupt:
        raise SystemExit(interrupted_message(command, output_dir, trainer.state.global_step)) from None


def interrupted_message(command: str, output_dir: str | Path, step: int) -> str:
    """One line for Ctrl-C during training: the step reached, the newest complete checkpoint and how to resume."""
    existing = complete_checkpoints(output_dir)
    if not existing:
        return (
            f"trl-sdar {command}: interrupted at step {step}; no complete checkpoint in {str(output_dir)!r} "
            "(save_strategy/save_steps decide when one is written), so a new run starts at step 0."
        )
    return (
        f"trl-sdar {command}: interrupted at step {step}; the newest complete checkpoint is {str(existing[-1])!r}: "
        f"resume with the same command plus --resume_from_checkpoint true."
    )
