"""`trl-sdar sft`: expert demonstrations → TRL `SFTTrainer` (LoRA or full) → a model folder RL and eval start from.

The dataset is already tokenized (`input_ids`, `completion_mask`: the rows the rollout builds, see `demos.py`), so
TRL trains on it as given; `completion_only_loss` is on, so only the expert's turns carry loss (TRL's
`assistant_only_loss` would need `{% generation %}` markers that e.g. SmolLM2's template lacks, and would re-render the
conversation instead of using the rollout's exact tokens). With LoRA the adapter is merged into the saved model by
default (`merge_adapter`), so `trl-sdar train --model_name_or_path <folder>` puts a fresh adapter on top of it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from trl_sdar.commands.errors import RecipeError, one_line_errors
from trl_sdar.commands.manifests import load_manifest
from trl_sdar.commands.output_paths import check_run_outputs, train_saying_how_to_resume
from trl_sdar.commands.sft.args import WarmStartArguments
from trl_sdar.commands.sft.demos import Demonstration, DemoSettings, render_demonstrations
from trl_sdar.models import resolve_model_path

logger = logging.getLogger(__name__)
EVAL_TASK_IDS = range(128)  # ids of the shipped evaluation manifests


def demo_task_ids(warm: WarmStartArguments) -> list[int]:
    """Task ids to try in order: the manifest's, or `demo_task_start …` with room for skipped tasks."""
    if warm.demo_manifest:
        manifest = load_manifest(warm.demo_manifest)
        if manifest["env_name"] != warm.env_name:
            raise ValueError(f"demo_manifest {warm.demo_manifest!r} is for {manifest['env_name']!r}, not "
                             f"env_name={warm.env_name!r}.")  # fmt: skip
        return list(manifest["task_ids"])
    span = (2 * warm.num_demos + 16) * (16 if warm.task_types else 1)  # room for skipped (and other-type) tasks
    ids = list(range(warm.demo_task_start, warm.demo_task_start + span))
    if ids[0] in EVAL_TASK_IDS:
        logger.warning(f"demo_task_start={warm.demo_task_start}: demonstrations overlap the evaluation ids 0-127.")
    return ids


def build_demonstrations(warm: WarmStartArguments, tokenizer, seed: int) -> tuple[list[Demonstration], dict]:
    from trl_sdar.commands.environments import env_kwargs
    from trl_sdar.envs import make_env
    from trl_sdar.envs.selection import select_task_types

    task_ids = demo_task_ids(warm)
    kwargs = env_kwargs(warm.env_name, source=warm.env_source, data_dir=warm.env_data_dir,
                        difficulty=warm.env_difficulty, max_task_id=max(task_ids),
                        questions_path=warm.questions_path, options=warm.env_options)  # fmt: skip
    skills = None
    if warm.skills_fraction > 0:
        from trl_sdar.skills.task_context import skills_for

        skills = skills_for(warm.env_name, warm.skills)
    settings = DemoSettings(
        rollout_unit=warm.rollout_unit, history_window=warm.history_window, parser=warm.parser,
        max_turns=warm.max_turns, max_turn_tokens=warm.max_turn_tokens, max_episode_tokens=warm.max_episode_tokens,
        skills_fraction=warm.skills_fraction, skills_layout=warm.skills_layout,
        teacher_context_header=warm.teacher_context_header,
        teacher_context_placement=warm.teacher_context_placement, search=warm.demo_search, seed=seed,
    )  # fmt: skip
    env = make_env(warm.env_name, **kwargs)
    try:
        widen = "move demo_task_start or give a demo_manifest"
        task_ids = select_task_types(env, task_ids, warm.task_types, widen=widen)
        return render_demonstrations(env, tokenizer, task_ids, warm.num_demos, settings, skills=skills)
    finally:
        env.close()


def to_dataset(demos: Sequence[Demonstration], max_length: int | None):
    """The tokenized SFT dataset (`input_ids`, `completion_mask`); refuses rows that `max_length` would cut."""
    from datasets import Dataset

    rows = [{"input_ids": r["input_ids"], "completion_mask": r["completion_mask"]} for d in demos for r in d.rows]
    longest = max(len(r["input_ids"]) for r in rows)
    if max_length is not None and longest > max_length:
        raise ValueError(f"max_length={max_length} would cut demonstrations (the longest has {longest} tokens): "
                         f"raise max_length to >= {longest} or set it to null.")  # fmt: skip
    return Dataset.from_list(rows)


def completion_loss(model, rows: Sequence[dict]) -> float:
    """Mean next-token loss over the completion tokens of `rows` (what SFT minimises), without gradient."""
    import torch

    total, count = 0.0, 0
    model_device = next(model.parameters()).device
    with torch.no_grad():
        for row in rows:
            ids = torch.tensor([row["input_ids"]], device=model_device)  # (1, L)
            mask = torch.tensor(row["completion_mask"][1:], device=model_device, dtype=torch.bool)  # (L-1,)
            logits = model(input_ids=ids).logits[0, :-1]  # (L-1, V)
            losses = torch.nn.functional.cross_entropy(logits.float(), ids[0, 1:], reduction="none")  # (L-1,)
            total, count = total + losses[mask].sum().item(), count + int(mask.sum())
    return total / max(count, 1)


def run_sft(warm: WarmStartArguments, training, model_args) -> Path:
    """Render the demonstrations, train, save the model folder; returns it."""
    import torch
    from transformers import AutoTokenizer
    from trl import SFTTrainer, get_peft_config

    from trl_sdar.method.cpu_head import compact_cpu_head

    if not torch.cuda.is_available() and (training.bf16 or training.fp16):
        raise RecipeError("bf16/fp16 need a GPU; on CPU set bf16: false (and use_cpu: true).")
    resume = check_run_outputs(training.output_dir, training.resume_from_checkpoint, training.max_steps)
    start = time.perf_counter()
    model_path = resolve_model_path(model_args.model_name_or_path, full_model=True)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    demos, dropped = build_demonstrations(warm, tokenizer, training.seed)
    dataset = to_dataset(demos, training.max_length)
    render_s = time.perf_counter() - start
    training.completion_only_loss = True  # loss on the expert's turns only
    if model_args.dtype is not None:
        training.model_init_kwargs = {**(training.model_init_kwargs or {}), "dtype": model_args.dtype}
    peft_config = get_peft_config(model_args)
    trainer = SFTTrainer(model=model_path, args=training, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config)  # fmt: skip
    with compact_cpu_head():  # CPU: the output layer runs on the completion positions only (see cpu_head.py)
        train_saying_how_to_resume("sft", trainer, training.output_dir, resume)
    output = Path(training.output_dir)
    merged = peft_config is not None and warm.merge_adapter
    if trainer.accelerator.is_main_process:
        _save(trainer, tokenizer, output, merged)
        _write_records(output, trainer, demos, dropped, warm, render_s, time.perf_counter() - start, merged)
        print(f"[sft] {len(demos)} demonstrations ({len(dataset)} rows) → {output}")
    return output


def _save(trainer, tokenizer, output: Path, merged: bool) -> None:
    if merged:
        model = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        model.save_pretrained(str(output))
    else:
        trainer.save_model(str(output))
    tokenizer.save_pretrained(str(output))


def _write_records(output: Path, trainer, demos, dropped, warm, render_s: float, total_s: float, merged) -> None:
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    summary = {
        "env_name": warm.env_name,
        "rollout_unit": warm.rollout_unit,
        "history_window": warm.history_window,
        "num_demos": len(demos),
        "num_rows": sum(len(d.rows) for d in demos),
        "with_skills": sum(d.with_skills for d in demos),
        "completion_tokens": sum(sum(r["completion_mask"]) for d in demos for r in d.rows),
        "task_ids": [d.task_id for d in demos],
        "dropped": {str(k): v for k, v in dropped.items()},
        "steps": trainer.state.global_step,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "saved": "merged model" if merged else ("adapter" if hasattr(trainer.model, "peft_config") else "model"),
        "render_seconds": round(render_s, 2),
        "seconds": round(total_s, 2),
    }
    (output / "sft_summary.json").write_text(json.dumps(summary, indent=1))
    (output / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    with open(output / "demos.jsonl", "w") as f:
        for d in demos:
            for r in d.rows:
                record = {"task_id": d.task_id, "task_type": d.task_type, "with_skills": d.with_skills,
                          "prompt": r["prompt_text"], "completion": r["completion_text"]}  # fmt: skip
                f.write(json.dumps(record) + "\n")


def main(argv: list[str]) -> None:
    """`trl-sdar sft ARGS`: expert demonstrations → supervised warm start."""
    from trl_sdar.commands.sft.args import parse_sft_args

    with one_line_errors("sft"):
        run_sft(*parse_sft_args(argv))
