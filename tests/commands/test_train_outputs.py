"""`trl-sdar train` checks where it writes before it loads anything, never overwrites checkpoints silently, resumes
the newest with `--resume_from_checkpoint true`, and ends Ctrl-C with one line saying how to resume."""

import json
from pathlib import Path

import pytest
from _cli import error_line

from trl_sdar.cli import main
from trl_sdar.commands.output_paths import (
    check_checkpoint_folder,
    check_run_outputs,
    checkpoint_step,
    complete_checkpoints,
    resolve_resume,
)

RECIPE = str(Path(__file__).parents[1] / "data" / "tiny_webshop.yaml")


def _checkpoint(folder: Path, step: int, complete: bool = True) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if complete:
        (path / "trainer_state.json").write_text("{}")
    return path


def test_output_dir_that_is_a_file_is_one_line(tmp_path):
    target = tmp_path / "a_file"
    target.write_text("x")
    message = error_line(["train", "--config", RECIPE, "--output_dir", str(target)])
    assert message.startswith("trl-sdar train: error: output_dir=") and "is a file" in message


def test_resume_from_a_model_folder_says_what_it_is(tmp_path, tiny_model_dir):
    message = error_line(["train", "--config", RECIPE, "--output_dir", str(tmp_path / "run"),
                      "--resume_from_checkpoint", tiny_model_dir])  # fmt: skip
    assert "is a model folder, not a training checkpoint" in message and "--model_name_or_path" in message


def test_existing_checkpoints_are_not_overwritten_and_true_resumes_the_newest(tmp_path, monkeypatch):
    from trl_sdar.method.trainer import SDARTrainer

    out = tmp_path / "run"
    argv = ["train", "--config", RECIPE, "--output_dir", str(out), "--max_steps", "3", "--save_strategy", "steps",
            "--save_steps", "1"]  # fmt: skip
    calls = []
    original = SDARTrainer.training_step

    def interrupted(self, *args, **kwargs):  # Ctrl-C during the second step
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SDARTrainer, "training_step", interrupted)
    message = error_line(argv)
    assert "interrupted at step 1" in message and "checkpoint-1" in message
    assert "--resume_from_checkpoint true" in message
    monkeypatch.setattr(SDARTrainer, "training_step", original)

    message = error_line(argv)  # a fresh run would start at step 0 over checkpoint-1
    assert "already holds checkpoints (checkpoint-1)" in message and "--resume_from_checkpoint true" in message

    main([*argv, "--resume_from_checkpoint", "true"])
    steps = [h["step"] for h in json.loads((out / "log_history.json").read_text()) if "loss" in h]
    assert steps == [1, 2, 3]  # step 1 from the checkpoint's history, then 2 and 3

    # checkpoint-3 is at max_steps: resuming it would train a fourth step (Trainer stops only after a step)
    message = error_line([*argv, "--resume_from_checkpoint", "true"])
    assert "checkpoint-3' was saved at step 3 and max_steps=3" in message and "earlier checkpoint" in message


def test_a_checkpoint_at_max_steps_is_not_resumed(tmp_path):
    checkpoint = _checkpoint(tmp_path, 20)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 20}))
    assert checkpoint_step(checkpoint) == 20
    for max_steps in (20, 10):
        with pytest.raises(ValueError, match=f"saved at step 20 and max_steps={max_steps}: .* would train step 21"):
            check_run_outputs(tmp_path, "true", max_steps)
    assert check_run_outputs(tmp_path, "true", 30) == str(checkpoint)  # more steps to train
    assert check_run_outputs(tmp_path, "true", -1) == str(checkpoint)  # epoch-based: Trainer counts the steps


def test_resolve_resume(tmp_path):
    assert resolve_resume(tmp_path / "new", None) is None
    _checkpoint(tmp_path, 2)
    newest = _checkpoint(tmp_path, 10)
    _checkpoint(tmp_path, 12, complete=False)  # killed while saving
    assert complete_checkpoints(tmp_path) == [tmp_path / "checkpoint-2", newest]
    assert resolve_resume(tmp_path, "true") == str(newest)
    assert resolve_resume(tmp_path, str(newest)) == str(newest)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        resolve_resume(tmp_path, None)
    with pytest.raises(ValueError, match="holds no complete checkpoint"):
        resolve_resume(tmp_path / "empty", "true")
    with pytest.raises(ValueError, match="is a run folder, not a checkpoint"):
        check_checkpoint_folder(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        check_checkpoint_folder(tmp_path / "nope")
