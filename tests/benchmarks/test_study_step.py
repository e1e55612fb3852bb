"""benchmarks/study_step.py on the tiny model in the doors world: each arm's step split into its parts, rows counted,
the parts add up to the step (timings themselves are not asserted)."""

import json
from pathlib import Path

import pytest

RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "study" / "sdar_smollm2_doors_cpu.yaml")


@pytest.fixture(scope="module")
def study_step(load_benchmark):
    return load_benchmark("study_step")


def test_profiles_grpo_and_shared_sdar_steps_of_a_recipe(study_step, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the recipe's relative output folder is replaced by the benchmark's own
    out = tmp_path / "step.json"
    argv = [
        "--config",
        RECIPE,
        "--model",
        tiny_model_dir,
        "--steps",
        "2",
        "--arms",
        "grpo,sdar-shared",
        "--output",
        str(out),
        "--env_options",
        '{"context": "informative", "rooms": 1}',
        "--max_turns",
        "1",
    ]  # recipe overrides
    study_step.main(argv)
    report = json.loads(out.read_text())
    assert list(report["arms"]) == ["grpo", "sdar-shared"]
    grpo, sdar = report["arms"]["grpo"], report["arms"]["sdar-shared"]
    for arm in (grpo, sdar):
        assert len(arm["steps"]) == 2 and arm["measured_steps"] == 1
        assert arm["rows"] == 16  # 2 tasks x 8 episodes of one turn each: the overrides reached the recipe
        assert 0 < arm["student_forward_s"] < arm["step_s"] and 0 < arm["rollout_s"] < arm["step_s"]
        parts = arm["rollout_s"] + arm["teacher_s"] + arm["student_forward_s"] + arm["backward_and_optimizer_s"]
        assert parts == pytest.approx(arm["step_s"], rel=1e-6)
    assert grpo["teacher_s"] == 0 and sdar["teacher_s"] > 0  # GRPO has no teacher pass
    assert grpo["step_time_vs_grpo"] == 1.0
    assert not list(tmp_path.glob("outputs"))  # nothing written outside the report


def test_rejects_unknown_arms_and_too_few_steps(study_step, capsys):
    with pytest.raises(SystemExit):
        study_step.main(["--config", RECIPE, "--arms", "grpo,ppo"])
    assert "unknown ['ppo']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        study_step.main(["--config", RECIPE, "--steps", "1"])
    assert "--steps 1: expected >= 2" in capsys.readouterr().err
