"""benchmarks/merge_summaries.py: one compare summary from parts made apart, statistics recomputed over all runs."""

import json

import pytest


@pytest.fixture(scope="module")
def merge_summaries(load_benchmark):
    return load_benchmark("merge_summaries")


def _row(method: str, seed: int, after: float, curve: list[float]) -> dict:
    metrics = {key: None for key in ("score_before", "score_after", "valid_format_before", "valid_format_after",
                                     "train_runtime_s", "final_teacher_gap", "final_gate_mean")}  # fmt: skip
    return {**metrics, "method": method, "seed": seed, "steps": len(curve), "success_before": 0.25,
            "success_after": after, "success_gain": after - 0.25, "train_wall_s": 100.0 + seed,
            "median_step_time_s": 5.0, "train_success_mean": sum(curve) / len(curve),
            "train_success_per_step": curve,
            "episodes_before": {"wins": 1, "episodes": 4}, "episodes_after": {"wins": round(4 * after), "episodes": 4,
            "ci95": [0.0, 1.0]}}  # fmt: skip


def _part(rows: list[dict], methods: dict, success: float = 0.25) -> dict:
    return {"name": "doors", "base_recipe": "r.yaml", "model_name_or_path": "m", "common_overrides": {"max_turns": 1},
            "eval": {"manifest": "doors1_builtin_eval128", "num_tasks": 2, "seeds": [0], "temperature": 1.0},
            "seeds": [0, 1, 2],
            "method_overrides": methods, "time_reference": "grpo",
            "starting_model_eval": {"base": {"success_rate": success}}, "runs": rows}  # fmt: skip


def test_parts_merge_into_one_summary_with_statistics_over_all_runs(merge_summaries, tmp_path, capsys):
    grpo, sdar = {"sdar_coef": 0.0}, {}
    old = _part([_row("grpo", s, a, [0.0, 0.5]) for s, a in [(0, 0.5), (1, 0.25), (2, 0.75)]]
                + [_row("sdar", 0, 0.75, [0.5, 1.0])], {"grpo": grpo, "sdar": sdar})  # fmt: skip
    new = _part([_row("sdar", s, a, [0.5, 0.5, 1.0]) for s, a in [(2, 1.0), (1, 0.5)]], {"sdar": sdar})
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    out = tmp_path / "merged" / "summary.json"
    args = [str(tmp_path / "old.json"), str(tmp_path / "new.json"), "--output", str(out)]
    assert merge_summaries.main([*args, "--markdown", str(tmp_path / "results.md")]) == 0
    merged = json.loads(out.read_text())
    assert [(r["method"], r["seed"]) for r in merged["runs"]] == [("grpo", 0), ("grpo", 1), ("grpo", 2),
                                                                  ("sdar", 0), ("sdar", 1), ("sdar", 2)]  # fmt: skip
    assert merged["methods"]["sdar"]["success_after"]["mean"] == pytest.approx(0.75)
    assert merged["methods"]["sdar"]["success_gain"]["n"] == 3
    paired = merged["paired_with_reference"]["sdar"]
    assert paired["differences"] == {"0": 0.25, "1": 0.25, "2": 0.25} and paired["ahead"] == 3
    assert paired["mean"] == pytest.approx(0.25)
    # the curve over seeds is as long as the shortest run's: sdar seed 0 logged 2 steps
    assert [p["step"] for p in merged["training_curves"]["sdar"]] == [1, 2]
    assert merged["training_curves"]["sdar"][1] == {"step": 2, "mean": pytest.approx(2 / 3), "min": 0.5, "max": 1.0}
    assert merged["starting_model_eval"] == {"base": {"success_rate": 0.25}}
    assert merged["merged_from"][str(tmp_path / "new.json")] == ["sdar seed 1", "sdar seed 2"]
    assert "| sdar | +0.250" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"success": 0.5}, "the starting model's success {'base': 0.5} differs"),
        ({"methods": {"sdar": {"sdar_coef": 0.1}}}, "method 'sdar' has overrides {'sdar_coef': 0.1}"),
        ({"rows": [_row("grpo", 1, 0.5, [0.0])]}, "grpo seed 1 is also in"),
    ],
)
def test_parts_of_different_comparisons_are_refused(merge_summaries, change, expected, tmp_path, capsys):
    first = _part([_row("grpo", 1, 0.25, [0.0])], {"grpo": {"sdar_coef": 0.0}, "sdar": {}})
    second = _part(change.get("rows", [_row("sdar", 1, 0.5, [0.0])]), change.get("methods", {"sdar": {}}),
                   change.get("success", 0.25))  # fmt: skip
    paths = []
    for i, part in enumerate((first, second)):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(part))
    with pytest.raises(SystemExit) as exit_info:
        merge_summaries.main([*map(str, paths), "--output", str(tmp_path / "out.json")])
    assert exit_info.value.code == 2 and expected in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()
