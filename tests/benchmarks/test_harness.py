"""benchmarks/harness.py on its own: arms take turns in order, ratios to the reference arm, the JSON report, the
machine and load record, memory, and the settings command line."""

import json
import math
import os
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace

import pytest


@pytest.fixture(scope="module")
def harness(load_benchmark):
    return load_benchmark("harness")


def test_turns_cycle_through_active_arms_and_skip_finished_ones(harness):
    turns, order = harness.Turns(3), []

    def arm(i, steps):
        for _ in range(steps):
            turns.wait(i)
            order.append(i)
            turns.done_step(i)
        turns.leave(i)

    threads = [threading.Thread(target=arm, args=(i, n)) for i, n in enumerate((3, 1, 2))]
    for t in reversed(threads):  # started last to first: the order comes from the turns, not the start
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert order == [0, 1, 2, 0, 2, 0]


def _stepping_arm(turns, index, name, steps, order, fail_at=None):
    def arm():
        for step in range(steps):
            turns.wait(index)
            if step == fail_at:
                raise ValueError(f"{name} broke")
            order.append((name, step))
            time.sleep(0.001 * (3 - index))  # the first arm is the slowest: only the turns keep the order
            turns.done_step(index)

    return arm


def test_run_side_by_side_steps_the_arms_in_turn(harness):
    names, order = ["grpo", "sdar-live", "sdar-ema"], []
    turns = harness.Turns(len(names))
    arms = {name: _stepping_arm(turns, i, name, 3 - (i == 2), order) for i, name in enumerate(names)}
    harness.run_side_by_side(arms, turns)
    assert order == [
        ("grpo", 0), ("sdar-live", 0), ("sdar-ema", 0),
        ("grpo", 1), ("sdar-live", 1), ("sdar-ema", 1),
        ("grpo", 2), ("sdar-live", 2),
    ]  # fmt: skip


def test_run_side_by_side_lets_the_others_finish_then_raises_the_failure(harness):
    names, order = ["grpo", "sdar-live"], []
    turns = harness.Turns(len(names))
    arms = {
        "grpo": _stepping_arm(turns, 0, "grpo", 3, order),
        "sdar-live": _stepping_arm(turns, 1, "sdar-live", 3, order, fail_at=1),
    }
    with pytest.raises(RuntimeError, match="arm sdar-live failed: ValueError") as failure:
        harness.run_side_by_side(arms, turns)
    assert isinstance(failure.value.__cause__, ValueError)
    assert order == [("grpo", 0), ("sdar-live", 0), ("grpo", 1), ("grpo", 2)]


def test_turn_order_alternates_which_arm_goes_first(harness):
    assert [harness.turn_order(["reprefill", "cached"], step) for step in range(3)] == [
        ["reprefill", "cached"], ["cached", "reprefill"], ["reprefill", "cached"]
    ]  # fmt: skip


def test_compare_gives_each_arm_its_ratios_to_grpo_and_the_targets_met(harness):
    arms = {
        "grpo": {"step_time_s": 2.0, "peak_mem_mb": 400.0},
        "sdar-live": {"step_time_s": 2.4, "peak_mem_mb": 410.0},
        "sdar-ema": {"step_time_s": 3.0, "peak_mem_mb": 600.0},
        "sdar-base": {"step_time_s": float("nan"), "peak_mem_mb": 380.0},
    }
    metrics = {"step_time": "step_time_s", "peak_mem": "peak_mem_mb"}
    out = harness.compare(arms, metrics, {"step_time": 1.25, "peak_mem": 1.05})
    assert list(out) == ["sdar-live", "sdar-ema", "sdar-base"]  # every arm but the reference, in order
    assert out["sdar-live"]["ratios"] == pytest.approx({"step_time": 1.2, "peak_mem": 1.025})
    assert out["sdar-live"]["targets_met"] == {"step_time": True, "peak_mem": True}
    assert out["sdar-ema"]["ratios"] == pytest.approx({"step_time": 1.5, "peak_mem": 1.5})
    assert out["sdar-ema"]["targets_met"] == {"step_time": False, "peak_mem": False}
    assert math.isnan(out["sdar-base"]["ratios"]["step_time"])  # no number: no ratio, and no target met
    assert out["sdar-base"]["targets_met"] == {"step_time": False, "peak_mem": True}


def test_compare_against_another_reference_without_targets(harness):
    units = {"episode": {"rows": 4, "tokens": 1000}, "turn": {"rows": 16, "tokens": 2500}}
    out = harness.compare(units, {"rows": "rows", "tokens": "tokens"}, reference="episode")
    assert out == {"turn": {"ratios": {"rows": 4.0, "tokens": 2.5}, "targets_met": {}}}


@pytest.mark.parametrize(
    "a, b, expected",
    [(3.0, 2.0, 1.5), (0.0, 2.0, 0.0), (1.0, 0.0, math.nan), (1.0, -1.0, math.nan), (math.inf, 1.0, math.nan)],
)
def test_ratio_is_nan_where_it_means_nothing(harness, a, b, expected):
    got = harness.ratio(a, b)
    assert math.isnan(got) if math.isnan(expected) else got == expected


def test_write_json_writes_non_finite_values_as_null(harness, tmp_path):
    path = tmp_path / "deep" / "report.json"  # folders made as needed
    report = {
        "ratio": float("nan"),
        "arms": {"grpo": {"step_time_s": 1.5, "peak": float("inf"), "steps": [1, float("-inf"), 2.5]}},
        "load": (0.5, float("nan")),
        "name": "tiny",
        "ok": True,
    }
    harness.write_json(path, report)
    text = path.read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert data == {
        "ratio": None,
        "arms": {"grpo": {"step_time_s": 1.5, "peak": None, "steps": [1, None, 2.5]}},
        "load": [0.5, None],
        "name": "tiny",
        "ok": True,
    }
    assert report["ratio"] != report["ratio"]  # the caller's data is left as it was (NaN)
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]  # no partial file left behind
    harness.write_json(path, {"again": 1})  # replaces the file whole
    assert json.loads(path.read_text()) == {"again": 1}


def test_machine_records_the_device_and_the_load_at_start_and_end(harness):
    record = harness.machine()
    assert {"device", "cpu", "torch", "torch_threads", "dtype", "load_average_start"} <= set(record)
    assert record["device"] and record["cpu"] and record["torch_threads"] >= 1
    assert record["dtype"] in ("fp32", "bf16")
    assert "load_average_end" not in record
    assert harness.end_load(record) is record
    for key in ("load_average_start", "load_average_end"):
        assert len(record[key]) == 3 and all(isinstance(x, float) and x >= 0 for x in record[key]), key


def test_timed_and_measured(harness):
    out, seconds = harness.timed(lambda x, y=0: time.sleep(0.01) or x + y, 2, y=3)
    assert out == 5 and seconds >= 0.01
    assert harness.measured([10, 20, 30]) == [20, 30]  # the first step is the warm-up
    assert harness.measured([10]) == [10]  # unless it is the only one


def test_memory_sees_a_steps_transient_peak(harness):
    import torch

    memory = harness.Memory()
    if memory.cuda:
        pytest.skip("measures the CPU resident set")
    memory.begin()
    block = torch.ones(16 * 2**20)  # 64 MB, written
    del block
    assert memory.end() >= 60
    if os.access("/proc/self/clear_refs", os.W_OK):  # the kernel lets the peak be reset
        memory.begin()
        assert memory.end() < 60  # the next step starts from what is resident now
    assert harness.peak_rss_mb() > 60


def test_resident_mb_counts_each_tensor_once(harness):
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(256, 256, bias=False), torch.nn.Linear(256, 256, bias=False))
    model[1].weight = model[0].weight  # tied: one storage
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 256)).sum().backward()
    optimizer.step()  # two state tensors of the weight's size, and a step counter
    trainer = SimpleNamespace(model=model, teacher=None, optimizer=optimizer)
    weight_mb = 256 * 256 * 4 / 2**20
    assert harness.resident_mb(trainer) == pytest.approx(3 * weight_mb, rel=1e-3)
    teacher = SimpleNamespace(copy=torch.nn.Linear(256, 256, bias=False))
    with_teacher = SimpleNamespace(model=model, teacher=teacher, optimizer=None)
    assert harness.resident_mb(with_teacher) == pytest.approx(2 * weight_mb)


@dataclass
class _Settings:
    model: str = "tiny"
    steps: int = 3
    unshared: bool = False
    context_tokens: int = 1000


def test_settings_parser_has_one_flag_per_field(harness):
    parser = harness.settings_parser(_Settings, "a benchmark", lists={"context_tokens": "250,500"})
    args = parser.parse_args(["--steps", "5", "--unshared", "--context-tokens", "100,200"])
    assert (args.model, args.steps, args.unshared, args.context_tokens) == ("tiny", 5, True, "100,200")
    assert harness.settings_from(args, _Settings, skip=["context_tokens"]) == _Settings(steps=5, unshared=True)
    assert harness.settings_from(parser.parse_args([]), _Settings, skip=["context_tokens"]) == _Settings()
    assert harness.flag("max_completion_length") == "--max-completion-length"
    with pytest.raises(SystemExit):
        parser.parse_args(["--steps", "many"])
