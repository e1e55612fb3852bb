import importlib.util
import json
import random

import pytest
from _cli import error_line

from trl_sdar.cli import main
from trl_sdar.commands.evaluate.policy import evaluate_policy, random_action, summarize
from trl_sdar.envs.base import Observation


@pytest.mark.parametrize("env_name", ["webshop", "search_qa"])
def test_eval_expert_solves_and_random_fails(env_name, tmp_path):
    for policy, expected in (("expert", 1.0), ("random", 0.0)):
        out = tmp_path / f"{policy}.json"
        main(["eval", "--env", env_name, "--policy", policy, "--num-tasks", "6", "--seed", "1", "--output", str(out)])
        report = json.loads(out.read_text())
        assert report["success_rate"] == expected, policy
        assert report["num_tasks"] == 6 and report["task_ids"] == list(range(6)) and report["env"] == env_name
        assert sum(t["num_tasks"] for t in report["per_task_type"].values()) == 6
        if policy == "expert":
            assert report["mean_score"] == 1.0


@pytest.mark.skipif(importlib.util.find_spec("trl_sdar.envs.alfworld") is None, reason="ALFWorld env not built")
def test_eval_alfworld_expert(tmp_path):
    out = tmp_path / "a.json"
    main(["eval", "--env", "alfworld", "--policy", "expert", "--num-tasks", "3", "--output", str(out)])
    assert json.loads(out.read_text())["success_rate"] == 1.0


def test_random_policy_is_deterministic_by_seed():
    from trl_sdar.envs import make_env

    runs = [summarize(evaluate_policy(lambda: make_env("search_qa"), range(5), "random", seed=s)) for s in (3, 3, 4)]
    assert runs[0]["episodes"] == runs[1]["episodes"]
    assert random_action(Observation("a b", ("x", "y")), None, random.Random(0)) in ("x", "y")
    assert random_action(Observation("alpha", ()), None, random.Random(0)) in ("search[alpha]", "answer[alpha]")


def test_environment_exception_is_counted_not_raised():
    class Broken:
        name, max_turns = "broken", 3

        def task(self, task_id):
            from trl_sdar.envs.base import Task

            return Task("broken", task_id, "x", "t")

        def reset(self, task_id):
            raise OSError("engine crashed")

    report = summarize(evaluate_policy(Broken, [0, 1], "expert"))
    assert report["env_errors"] == 2 and report["success_rate"] == 0.0
    assert "engine crashed" in report["episodes"][0]["error"]


def test_bad_arguments_fail_clearly():
    assert "invalid choice: 'nope'" in error_line(["eval", "--env", "nope", "--policy", "expert"])
    message = error_line(["eval", "--env", "webshop", "--policy", "expert", "--num-tasks", "0"])
    assert "--num-tasks: 0 is not valid" in message
    with pytest.raises(ValueError, match="Unknown policy"):
        evaluate_policy(lambda: None, [0], "greedy")


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--task-start", "-5"], "--task-start: -5 is not valid; expected an integer >= 0"),
        (["--task-start", "x"], "--task-start: 'x' is not an integer"),
        (["--max-turns", "0"], "--max-turns: 0 is not valid"),
        (["--workers", "0"], "--workers: 0 is not valid"),
        (["--batch-size", "-1"], "--batch-size: -1 is not valid"),
        (["--max-turn-tokens", "0"], "--max-turn-tokens: 0 is not valid"),
        (["--temperature", "-1"], "--temperature: -1.0 is not valid; expected a number >= 0"),
        (["--seeds", "0,a"], "--seeds: '0,a' is not valid; expected comma-separated integers"),
        (["--seeds", "1,1"], "repeats a seed"),
        (["--env-source", "nope"], "invalid choice: 'nope'"),
        ([], "give --env or --manifest"),
    ],
)
def test_every_eval_input_error_is_one_line(extra, expected):
    base = ["eval", "--policy", "random"] + ([] if extra == [] else ["--env", "search_qa", "--num-tasks", "2"])
    assert expected in error_line(base + extra)


def test_bad_manifests_and_models_are_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert "is not valid JSON" in error_line(["eval", "--policy", "random", "--manifest", str(bad)])
    bad.write_text('{"env_name": "search_qa", "task_ids": [-1]}')
    assert "non-empty list of integers >= 0" in error_line(["eval", "--policy", "random", "--manifest", str(bad)])
    bad.write_text('{"env_name": "doom", "task_ids": [1]}')
    assert "env_name='doom'" in error_line(["eval", "--policy", "random", "--manifest", str(bad)])
    message = error_line(["eval", "--model", str(tmp_path / "no_model"), "--env", "search_qa", "--num-tasks", "1"])
    assert "does not exist" in message


def test_plot_input_errors_are_one_line(tmp_path):
    assert "--smooth: 1.5 is not valid; expected 0 <= smooth < 1" in error_line(
        ["plot", str(tmp_path), "--smooth", "1.5"]
    )
    assert "Run directory not found" in error_line(["plot", str(tmp_path / "missing")])


def test_eval_model_reports_avg_over_seeds_deterministically(tiny_model_dir, tmp_path):
    args = ["eval", "--model", tiny_model_dir, "--env", "search_qa", "--num-tasks", "3", "--seeds", "0,1"]
    args += ["--max-turn-tokens", "4", "--max-turns", "2", "--batch-size", "2"]
    reports = []
    for i in range(2):
        out = tmp_path / f"m{i}.json"
        main([*args, "--output", str(out)])
        reports.append(json.loads(out.read_text()))
    report = reports[0]
    assert [s["seed"] for s in report["per_seed"]] == [0, 1] and report["task_ids"] == [0, 1, 2]
    assert all(s["num_tasks"] == 3 for s in report["per_seed"])
    assert 0.0 <= report["success_rate"] <= 1.0 and report["success_rate_std"] >= 0.0
    assert all(1 <= e["turns"] <= 2 for s in report["per_seed"] for e in s["episodes"])
    assert reports[0]["per_seed"] == reports[1]["per_seed"]  # seeded sampling: reproducible
    assert report["agent_loop"] == {"rollout_unit": "turn", "history_window": 4, "parser": "reference"}  # Search
    assert "transcripts" not in report
    out = tmp_path / "transcripts.json"
    main([*args, "--transcripts", "4", "--output", str(out)])  # more than one batch of 2, fewer than 3 x 2 episodes
    kept = json.loads(out.read_text())["transcripts"]
    episodes = report["per_seed"][0]["episodes"]  # the first seed's, as sampled above (same seed: same episodes)
    assert [t["task_id"] for t in kept] == [e["task_id"] for e in episodes[:3]]  # the first seed has only 3
    assert [len(t["turns"]) for t in kept] == [e["turns"] for e in episodes[:3]]
    assert [t["won"] for t in kept] == [e["won"] for e in episodes[:3]]
    assert all(isinstance(turn, str) for t in kept for turn in t["turns"])
    out = tmp_path / "episode.json"
    main([*args, "--rollout-unit", "episode", "--history-window", "0", "--output", str(out)])
    assert json.loads(out.read_text())["agent_loop"]["rollout_unit"] == "episode"


def test_shipped_manifest_pins_tasks(tmp_path):
    out = tmp_path / "m.json"
    main(["eval", "--policy", "expert", "--manifest", "search_qa_builtin_eval128", "--output", str(out)])
    report = json.loads(out.read_text())
    assert report["task_ids"] == list(range(128)) and report["success_rate"] == 1.0
    main(["eval", "--policy", "expert", "--manifest", "search_qa_builtin_eval128", "--num-tasks", "5", "--output",
          str(out)])  # fmt: skip
    assert json.loads(out.read_text())["task_ids"] == list(range(5))  # the manifest's first 5 (was: all 128)
    assert "more than the 128 tasks" in error_line(["eval", "--policy", "expert", "--manifest",
                                                 "search_qa_builtin_eval128", "--num-tasks", "129"])  # fmt: skip
    with pytest.raises(SystemExit, match="alfworld_builtin_eval128"):
        main(["eval", "--policy", "expert", "--manifest", "no_such_manifest"])


def test_load_policy_places_the_model(tiny_model_dir):
    import torch

    from trl_sdar.commands.evaluate.policy import load_policy

    model, _ = load_policy(tiny_model_dir, device="cpu")
    assert next(model.parameters()).device.type == "cpu" and next(model.parameters()).dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_load_policy_uses_the_gpu_when_there_is_one(tiny_model_dir):
    from trl_sdar.commands.evaluate.policy import load_policy

    model, _ = load_policy(tiny_model_dir)
    assert next(model.parameters()).device.type == "cuda"  # evaluation on the CPU made paper-scale eval unusable


def test_the_console_script_exits_0_after_a_finished_command(tmp_path):
    # the installed `trl-sdar` calls sys.exit(main()): a command's return value must not become the exit status
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "trl-sdar"
    argv = [str(script), "eval", "--env", "doors", "--policy", "random", "--num-tasks", "3", "--output",
            str(tmp_path / "r.json")]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "'success_rate'" not in result.stderr  # the report was not dumped as an exit message
    assert (tmp_path / "r.json").is_file()
