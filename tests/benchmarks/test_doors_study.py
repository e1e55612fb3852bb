"""benchmarks/doors_study.py: a doors study folder read per colour, on a hand-written folder."""

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def doors_study(load_benchmark):
    return load_benchmark("doors_study")


def _eval(folder: Path, success: float, per_colour: dict, seeds: list[float]) -> None:
    folder.mkdir(parents=True)
    report = {"success_rate": success, "valid_format_rate": 1.0, "per_task_type": per_colour,
              "per_seed": [{"success_rate": s} for s in seeds]}  # fmt: skip
    (folder / "compare_eval.json").write_text(json.dumps(report))


def _step(step: int, success: float, **extra) -> str:
    return json.dumps({"step": step, "env/doors/success": success, "frac_reward_zero_std": 0.25 * step,
                       "step_time": 10.0 + step, **extra})  # fmt: skip


def test_a_study_is_read_per_colour_and_a_resumed_run_keeps_its_newest_steps(doors_study, tmp_path, capsys):
    _eval(tmp_path / "base", 0.3, {"door_blue": 0.5, "door_green": 0.3, "door_red": 0.1}, [0.3, 0.3])
    run = tmp_path / "runs" / "sdar" / "seed0"
    _eval(run, 0.8, {"door_blue": 1.0, "door_green": 0.9, "door_red": 0.5}, [0.75, 0.85])
    (run / "metrics.jsonl").write_text("\n".join([
        _step(1, 0.25, **{"env/doors/success/door_red": 0.5, "sdar/teacher_gap_mean": -0.02}),
        _step(2, 0.5),  # logged by the run that was killed after step 1's checkpoint
        _step(2, 0.75, **{"sdar/gate_mean": 0.49, "entropy": 0.3}),  # the resumed run's step 2
        json.dumps({"step": 2, "train_runtime": 30.0}),  # the end-of-training summary: not a step
    ]) + "\n")  # fmt: skip
    report = doors_study.main([str(tmp_path), "--output", str(tmp_path / "report.json")])
    assert json.loads((tmp_path / "report.json").read_text()) == report
    base, after = report["evals"]["base"], report["evals"]["runs/sdar/seed0"]
    assert base["per_colour_sum"] == pytest.approx(0.9) and after["per_colour_sum"] == pytest.approx(2.4)
    assert after["success_per_eval_seed"] == [0.75, 0.85] and after["success_rate"] == 0.8
    curves = report["training"]["runs/sdar/seed0"]
    assert curves["success"] == [0.25, 0.75]
    assert curves["success_per_colour"] == [{"door_red": 0.5}, {}]
    assert curves["frac_reward_zero_std"] == [0.25, 0.5] and curves["step_time_s"] == [11.0, 12.0]
    assert curves["teacher_gap_mean"] == [-0.02, None] and curves["gate_mean"] == [None, 0.49]
    assert curves["invalid_rate"] == [None, None] and curves["entropy"] == [None, 0.3]
    printed = capsys.readouterr().out
    assert "runs/sdar/seed0" in printed and "sum 2.40" in printed


def test_a_folder_without_the_starting_evaluation_is_refused(doors_study, tmp_path, capsys):
    with pytest.raises(SystemExit):
        doors_study.main([str(tmp_path)])
    assert "holds no base/compare_eval.json" in capsys.readouterr().err
