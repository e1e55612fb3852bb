"""scripts/bench_overhead.py on the tiny model: two steps per method, JSON with positive numbers and finite ratios."""

import importlib.util
import json
import math
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_overhead.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("bench_overhead", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


def test_benchmark_tiny_two_steps_writes_comparable_numbers(tmp_path):
    bench = _load_script()
    settings = bench.Settings(steps=2, batch=4, num_generations=2, max_completion_length=8, context_tokens=64)
    output = tmp_path / "bench.json"
    bench.run_benchmark(["tiny"], settings, output, isolate=False)  # in-process: no 2x trl import (~6 s each)
    report = json.loads(output.read_text())
    assert report["settings"]["steps"] == 2 and report["device"] and report["isolated"] is False
    entry = report["models"]["tiny"]
    for method in ("grpo", "sdar"):
        run = entry[method]
        assert len(run["steps"]) == 2 and run["measured_steps"] == 1
        for key in ("step_time_s", "rollout_time_s", "peak_mem_mb", "student_prompt_tokens"):
            assert run[key] > 0, (method, key)
    assert entry["grpo"]["teacher_time_s"] == 0.0 and entry["grpo"]["teacher_share"] == 0.0
    assert entry["sdar"]["teacher_time_s"] > 0 and 0 < entry["teacher_share"] < 1
    # the teacher sees the context: its prompt is the student's plus ~64 context tokens
    assert entry["sdar"]["teacher_prompt_tokens"] > entry["sdar"]["student_prompt_tokens"] + 50
    for key in ("step_time", "peak_mem", "step_time_from_share"):
        assert math.isfinite(entry["ratios"][key]) and entry["ratios"][key] > 0, key
    assert set(entry["targets"]) == {"step_time_le_1.3", "peak_mem_le_1.1"}
    assert "SDAR/GRPO" in bench.format_table(report)
