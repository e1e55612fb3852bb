"""The comparison's per-run numbers: episodes won with a 95% Wilson interval, training success per step, and the
run table of `results.md`, on hand-made eval reports and log histories."""

import json

import pytest

from trl_sdar.commands.compare.intervals import wilson_interval
from trl_sdar.commands.compare.report import SEED_METRICS, build_summary, episode_wins, results_markdown, seed_result


def test_wilson_interval_by_hand():
    # 17 of 32: p = 0.53125, z² / n = 3.8415 / 32; centre 0.52788, half-width 0.16341
    low, high = wilson_interval(17, 32)
    assert (low, high) == pytest.approx((0.364495, 0.691306), abs=1e-6)
    assert (low + high) / 2 == pytest.approx((17 / 32 + 1.959964**2 / 64) / (1 + 1.959964**2 / 32), abs=1e-6)
    # no win and every win: the interval keeps a bound at 0 or 1 and is not empty
    assert wilson_interval(0, 16) == pytest.approx((0.0, 0.193608), abs=1e-6)
    assert wilson_interval(32, 32) == pytest.approx((0.892821, 1.0), abs=1e-6)
    # more episodes at the same rate: a narrower interval around it
    assert wilson_interval(34, 64)[1] - wilson_interval(34, 64)[0] < high - low
    # z = 0 collapses to the rate itself
    assert wilson_interval(3, 4, z=0.0) == pytest.approx((0.75, 0.75))


@pytest.mark.parametrize("wins, n", [(3, 2), (-1, 4), (0, 0)])
def test_wilson_interval_refuses_impossible_counts(wins, n):
    with pytest.raises(ValueError, match=f"wins={wins}, n={n}"):
        wilson_interval(wins, n)


def _report(wins_per_seed: list[list[bool]]) -> dict:
    per_seed = [
        {
            "seed": i,
            "success_rate": sum(w) / len(w),
            "episodes": [{"task_id": t, "won": won} for t, won in enumerate(w)],
        }
        for i, w in enumerate(wins_per_seed)
    ]
    episodes = [won for w in wins_per_seed for won in w]
    rate = sum(episodes) / len(episodes)
    return {"success_rate": rate, "mean_score": rate, "valid_format_rate": 1.0, "per_seed": per_seed}


def test_episode_wins_counts_every_seed():
    counts = episode_wins(_report([[True, False, False, True], [False, False, True, False]]))
    assert counts["wins"] == 3 and counts["episodes"] == 8
    assert counts["ci95"] == pytest.approx(list(wilson_interval(3, 8)))


def test_seed_result_and_run_table(tmp_path):
    history = [
        {"step": 1, "loss": 0.1, "step_time": 10.0, "env/alfworld/success": 0.75, "sdar/teacher_gap_mean": -0.1},
        {"step": 2, "loss": 0.2, "step_time": 14.0, "env/alfworld/success": 0.25, "sdar/teacher_gap_mean": -0.2},
        {"step": 3, "loss": 0.3, "step_time": 12.0, "env/alfworld/success": 0.0, "env/alfworld/success/pick": 0.0},
        {"step": 3, "train_runtime": 40.0},
    ]
    (tmp_path / "log_history.json").write_text(json.dumps(history))
    before = _report([[True, False, False, False], [False, False, False, False]])
    after = _report([[True, True, False, True], [False, True, False, False]])
    row = seed_result("sdar", 0, tmp_path, {"wall_s": 50.0}, before, after)
    assert row["train_success_per_step"] == [0.75, 0.25, 0.0]  # the per-type curve is not a second environment
    assert row["train_success_mean"] == pytest.approx(1 / 3)
    assert row["episodes_before"]["wins"] == 1 and row["episodes_after"]["wins"] == 4
    assert row["episodes_after"]["ci95"] == pytest.approx(list(wilson_interval(4, 8)))
    assert (row["steps"], row["median_step_time_s"], row["final_teacher_gap"]) == (3, 12.0, -0.2)

    spec = {"name": "t", "base_recipe": "r.yaml", "model_name_or_path": "m", "seeds": [0],
            "eval": {"manifest": "x", "num_tasks": 4, "seeds": [0, 1], "temperature": 0.4},
            "method_overrides": {"sdar": {}}}  # fmt: skip
    summary = build_summary(spec, [row], {}, "sdar")
    assert summary["methods"]["sdar"]["train_success_mean"]["mean"] == pytest.approx(1 / 3)
    low, high = wilson_interval(4, 8)
    table = results_markdown(summary, [])
    assert f"| 1 → 4 of 8 ({low:.2f}–{high:.2f}) |" in table and "| 0.333 |" in table
    header = next(line for line in table.splitlines() if line.startswith("| method | seed |"))
    run_line = next(line for line in table.splitlines() if line.startswith("| sdar | 0 |"))
    assert header.count("|") == run_line.count("|")  # every column filled


def test_run_without_success_metric_has_none(tmp_path):
    (tmp_path / "log_history.json").write_text(json.dumps([{"step": 1, "loss": 0.1, "step_time": 3.0}]))
    report = _report([[False, True]])
    row = seed_result("grpo", 1, tmp_path, {}, report, report)
    assert row["train_success_mean"] is None and row["train_success_per_step"] == []


def test_bootstrap_interval_of_the_mean_over_seeds():
    from trl_sdar.commands.compare.intervals import bootstrap_interval

    low, high = bootstrap_interval([0.10, 0.20, 0.15, 0.30])
    assert 0.10 <= low < 0.1875 < high <= 0.30  # around the mean, inside the range of the seeds
    assert bootstrap_interval([0.10, 0.20, 0.15, 0.30]) == (low, high)  # reproducible
    assert bootstrap_interval([0.05, 0.05, 0.05]) == (0.05, 0.05)
    assert bootstrap_interval([0.2]) is None
    wide = bootstrap_interval([-0.2, 0.0, 0.3])
    assert wide[0] < 0 < wide[1]  # three seeds that disagree: an interval that does not exclude no gain


def test_method_summary_gives_the_gain_a_bootstrap_interval():
    from trl_sdar.commands.compare.report import method_summary

    rows = [{metric: None for metric in SEED_METRICS} | {"success_gain": gain} for gain in (0.1, 0.2, 0.3)]
    gain = method_summary(rows)["success_gain"]
    assert gain["mean"] == pytest.approx(0.2) and 0.1 <= gain["bootstrap_ci95"][0] < 0.2 < gain["bootstrap_ci95"][1]


def test_methods_are_paired_with_the_reference_seed_by_seed():
    from trl_sdar.commands.compare.report import paired_with_reference

    def row(method, seed, after):
        return {"method": method, "seed": seed, "success_after": after}

    methods = {
        "grpo": [row("grpo", 0, 0.30), row("grpo", 1, 0.50), row("grpo", 2, 0.40)],
        "sdar": [row("sdar", 0, 0.40), row("sdar", 1, 0.45), row("sdar", 2, 0.60), row("sdar", 7, 0.9)],
    }
    paired = paired_with_reference(methods, "grpo")
    assert set(paired) == {"sdar"}  # the reference is not paired with itself
    sdar = paired["sdar"]
    assert sdar["differences"] == pytest.approx({0: 0.10, 1: -0.05, 2: 0.20})  # seed 7 has no GRPO run to pair
    assert (sdar["n"], sdar["ahead"], sdar["behind"]) == (3, 2, 1)
    assert sdar["mean"] == pytest.approx(0.25 / 3)
    low, high = sdar["bootstrap_ci95"]
    assert -0.05 <= low < sdar["mean"] < high <= 0.20


def test_training_curve_is_the_seed_mean_and_range_per_step():
    from trl_sdar.commands.compare.report import training_curve

    rows = [{"train_success_per_step": [0.0, 0.25, 0.5]}, {"train_success_per_step": [0.5, 0.75]}, {}]
    assert training_curve(rows) == [
        {"step": 1, "mean": 0.25, "min": 0.0, "max": 0.5},
        {"step": 2, "mean": 0.5, "min": 0.25, "max": 0.75},
    ]
    assert training_curve([{}]) == []


def test_results_table_shows_the_paired_difference(tmp_path):
    (tmp_path / "log_history.json").write_text(json.dumps([{"step": 1, "step_time": 1.0, "env/doors/success": 0.5}]))
    before = _report([[False, False, False, False]])
    rows = [
        seed_result(method, seed, tmp_path, {}, before, _report([wins]))
        for method, seed, wins in [("grpo", 0, [True, False, False, False]), ("sdar", 0, [True, True, True, False])]
    ]
    spec = {"name": "t", "base_recipe": "r.yaml", "model_name_or_path": "m", "seeds": [0],
            "eval": {"manifest": "x", "num_tasks": 4, "seeds": [0], "temperature": 1.0},
            "method_overrides": {"grpo": {}, "sdar": {}}}  # fmt: skip
    summary = build_summary(spec, rows, {}, "grpo")
    assert summary["paired_with_reference"]["sdar"]["differences"] == {0: 0.5}
    assert summary["training_curves"]["sdar"] == [{"step": 1, "mean": 0.5, "min": 0.5, "max": 0.5}]
    assert "| sdar | +0.500 | 1 / 0 / 1 | 0: +0.500 |" in results_markdown(summary, [])
