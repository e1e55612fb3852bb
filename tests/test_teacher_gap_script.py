"""scripts/teacher_gap.py: which sampled tokens decide the action, and a report of the gap a context makes."""

import importlib.util
import math
from pathlib import Path

import pytest
from transformers import AutoTokenizer

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "teacher_gap.py"


@pytest.fixture(scope="module")
def gap():
    spec = importlib.util.spec_from_file_location("teacher_gap", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_action_tokens_are_the_ones_inside_the_action_tags(gap, tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tokenizer("<think>go</think><action>open red door</action>", add_special_tokens=False)["input_ids"]
    mask = gap.action_token_mask(tokenizer, ids)
    inside = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert "open red door" in inside and "think" not in inside and "go<" not in inside
    assert gap.action_token_mask(tokenizer, tokenizer("no tags", add_special_tokens=False)["input_ids"]) == [
        False
    ] * len(tokenizer("no tags", add_special_tokens=False)["input_ids"])


def test_summary_by_hand(gap):
    stats = gap.summary([0.0, 2.0], beta=1.0)
    assert stats["gap_mean"] == 1.0 and stats["gate_active"] == 0.5
    assert stats["gate_mean"] == pytest.approx((0.5 + 1 / (1 + math.exp(-2.0))) / 2)


def test_report_on_the_doors_world(gap, tiny_model_dir, tmp_path):
    report = gap.main(["--model", tiny_model_dir, "--env", "doors", "--skills", "task", "--num-tasks", "2",
                       "--max-turn-tokens", "12", "--output", str(tmp_path / "gap.json")])  # fmt: skip
    assert report["episodes"] == 4 and report["all_tokens"]["tokens"] > 0
    assert math.isfinite(report["all_tokens"]["gap_mean"]) and (tmp_path / "gap.json").is_file()
    assert 0.0 <= report["moved_tokens"]["share"] <= 1.0
    assert sum(v["turns"] for v in report["turn_gap_sum"].values()) > 0


def test_a_multi_process_launch_is_refused_before_any_model_loads(gap, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit, match="scripts/teacher_gap.py: launched as 2 processes"):
        gap.main(["--model", "/no/such/model", "--env", "doors"])
