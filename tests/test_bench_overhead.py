"""scripts/bench_overhead.py on the tiny model: arms step in turn, numbers are real, the teacher bench compares."""

import importlib.util
import json
import math
import sys
import threading
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_overhead.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_overhead", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


def test_turns_cycle_through_active_arms_and_skip_finished_ones(bench):
    turns, order = bench.Turns(3), []

    def arm(i, steps):
        for _ in range(steps):
            turns.wait(i)
            order.append(i)
            turns.done_step(i)
        turns.leave(i)

    threads = [threading.Thread(target=arm, args=(i, n)) for i, n in enumerate((3, 1, 2))]
    for t in reversed(threads):
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert order == [0, 1, 2, 0, 2, 0]


def test_benchmark_tiny_arms_side_by_side(bench, tmp_path):
    settings = bench.Settings(
        model="tiny", finetune="full", kinds="ema", unshared=True, steps=2, batch=4, num_generations=2,
        max_completion_length=8, context_tokens=64, teacher_repeats=1,
    )  # fmt: skip
    output = tmp_path / "bench.json"
    bench.run_benchmark(settings, output)
    report = json.loads(output.read_text())
    arms = report["arms"]
    assert list(arms) == ["grpo", "sdar-ema", "sdar-ema-unshared"]
    for name, arm in arms.items():
        assert len(arm["steps"]) == 2 and arm["measured_steps"] == 1
        for key in ("step_time_s", "rollout_time_s", "resident_mb", "peak_mem_mb"):
            assert arm[key] > 0, (name, key)
        assert (arm["teacher_time_s"] > 0) == (name != "grpo"), name
    # one arm steps at a time, in a fixed cycle: step k of every arm begins before step k + 1 of any
    begins = [(arm["steps"][k]["begin_s"], k, name) for name, arm in arms.items() for k in range(2)]
    assert [(k, name) for _, k, name in sorted(begins)] == [(k, name) for k in range(2) for name in arms]
    # the EMA teacher of a fully fine-tuned model is a frozen copy: one more model resident
    assert arms["sdar-ema"]["resident_mb"] > 1.2 * arms["grpo"]["resident_mb"]
    for name in arms:
        if name != "grpo":
            ratios = report["comparison"][name]["ratios"]
            assert all(math.isfinite(v) and v > 0 for v in ratios.values()), name
            assert set(report["comparison"][name]["targets_met"]) == {"step_time", "peak_mem"}
    teacher = report["teacher"]
    assert teacher["arm"] == "sdar-ema" and teacher["supported"] is True
    assert teacher["tokens_read_shared"] < teacher["tokens_read_unshared"] / 1.5  # GRPO groups share the prompt
    assert teacher["max_abs_logp_diff"] <= 1e-5
    assert report["machine"]["device"] and report["settings"]["context_tokens"] == 64
    assert "teacher alone" in bench.format_table(report)


def test_cli_rejects_bad_settings(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--kinds", "live,frozen"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--batch", "6", "--num-generations", "4"])
    settings, output = bench.parse_args(["--kinds", "base", "--unshared", "--layout", "episode"])
    assert bench.arm_names(settings) == [
        "grpo", "sdar-base", "sdar-base-unshared"
    ]  # fmt: skip


def test_teacher_only_scores_one_batch_with_every_kind(bench, tmp_path):
    settings = bench.Settings(
        model="tiny", finetune="lora", kinds="live,base", teacher_only=True, batch=4, num_generations=2,
        max_completion_length=8, context_tokens=64, teacher_repeats=1,
    )  # fmt: skip
    report = bench.run_benchmark(settings, tmp_path / "teacher.json")
    assert "arms" not in report and set(report["teacher_only"]) == {"live", "base"}
    for kind, t in report["teacher_only"].items():
        assert t["rows"] == 4 and t["shared_s"] > 0 and t["unshared_s"] > 0, kind
        assert t["tokens_read_shared"] < t["tokens_read_unshared"] / 1.5 and t["max_abs_logp_diff"] <= 1e-5, kind
    assert "teacher base" in bench.format_table(report)
