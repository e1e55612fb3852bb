"""scripts/gpu_check.sh as a CPU dry run: every stage runs (fp32, the GPU tests skip themselves), a failing stage does
not stop the others, the exit status says a stage failed, and the report holds each stage's key numbers."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _load_driver():
    spec = importlib.util.spec_from_file_location("gpu_check_run", ROOT / "scripts" / "gpu_check_run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_dry_run_runs_every_stage_and_reports_a_failed_one(tmp_path):
    empty_wheels = tmp_path / "no_wheels"
    empty_wheels.mkdir()  # no requirements.txt: install_wheels fails, and every later stage still runs
    out = tmp_path / "report"
    cmd = ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--python", sys.executable, "--out", str(out),
           "--work", str(tmp_path / "work"), "--wheels", str(empty_wheels), "--steps", "2",
           "--eval-tasks", "2"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]

    report = json.loads((out / "report.json").read_text())
    assert report["device"] == "cpu" and report["dry_run"] and report["precision"] == "fp32"
    assert not report["ok"] and report["failed"] == ["install_wheels"]
    stages = {s["name"]: s for s in report["stages"]}
    assert list(stages) == ["install_wheels", "environment", "model", "pytest_gpu", "train_episode_hf",
                            "train_turn_hf", "train_episode_vllm", "train_turn_vllm", "eval"]  # fmt: skip
    assert "gpu_check_wheels.sh" in stages["install_wheels"]["message"]
    assert {s["status"] for n, s in stages.items() if "vllm" in n} == {"skipped"}
    ran = [n for n in stages if n != "install_wheels" and "vllm" not in n]
    for name in ran:
        assert stages[name]["status"] == "pass", (name, stages[name]["message"])
        assert stages[name]["seconds"] > 0 and (out / stages[name]["log"]).exists()

    environment = stages["environment"]["numbers"]
    assert environment["versions"]["trl"] and environment["versions"]["datasets"] and not environment["cuda_available"]
    assert stages["model"]["numbers"]["tiny_weight_bytes"] < 2**20  # built in code, no weight file over a few MiB
    tests = stages["pytest_gpu"]["numbers"]
    assert tests["tests"] >= 1 and tests["skipped"] == tests["tests"] and tests["failed"] == tests["errors"] == 0
    assert all("CUDA" in reason for reason in tests["skip_reasons"])  # selected by -m gpu, skipped without CUDA
    for unit in ("episode", "turn"):
        train = stages[f"train_{unit}_hf"]["numbers"]
        assert train["unit"] == unit and train["precision"] == "float32" and train["steps_done"] == 2
        assert train["loss_finite"] and len(train["losses"]) == 2 and train["nonfinite_steps_skipped"] == 0
        assert train["distilled_tokens"] > 0 and train["context_tokens"] > 0  # the SDAR teacher ran
        assert train["adapter_saved"] and train["lora_b_abs_max"] > 0  # LoRA trained and saved
        assert train["peak_cuda_allocated_mib"] is None
    assert stages["train_turn_hf"]["numbers"]["turn_rows"] > 0
    evaluation = stages["eval"]["numbers"]
    assert evaluation["episodes"] == 4 and 0.0 <= evaluation["success_rate"] <= 1.0
    assert evaluation["model"].endswith("train_turn_hf")  # the adapter the turn stage trained

    summary = (out / "report.md").read_text()
    assert summary.startswith("# trl_sdar GPU check: FAIL (install_wheels)")
    assert all(f"| {name} | " in summary for name in stages)


def test_junit_counts_and_summary_rows(tmp_path):
    driver = _load_driver()
    xml = tmp_path / "junit.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.a" name="t1"/>'
        '<testcase classname="tests.a" name="t2"><failure message="boom"/></testcase>'
        '<testcase classname="tests.b" name="t3"><skipped message="needs a CUDA device"/></testcase>'
        '<testcase classname="tests.b" name="t4"><skipped message="needs a CUDA device"/></testcase>'
        '<testcase classname="tests.b" name="t5"><error message="fixture"/></testcase>'
        "</testsuite></testsuites>"
    )
    counts = driver.junit_counts(xml)
    assert [counts[k] for k in ("tests", "passed", "failed", "errors", "skipped")] == [5, 1, 1, 1, 2]
    assert counts["failed_tests"] == ["tests.a::t2", "tests.b::t5"]
    assert counts["skip_reasons"] == {"needs a CUDA device": 2}
    numbers = {"steps_done": 3, "loss_finite": True, "last_loss": 0.123456, "peak_cuda_allocated_mib": 12.5}
    stage = {"name": "train_turn_hf", "status": "pass", "seconds": 1.5, "message": "a|b", "numbers": numbers}
    shown = "steps_done=3, loss_finite=True, last_loss=0.1235, peak_cuda_allocated_mib=12.5"
    assert driver.key_numbers(stage) == shown
    report = {"ok": True, "failed": [], "machine": {"python": "3.12.1", "gpu": "NVIDIA H100", "gpu_memory_gib": 79.1},
              "versions": {"torch": "2.7.1"}, "precision": "bf16", "seconds": 200.0, "budget_s": 450.0,
              "started_utc": "2026-12-05T00:00:00+00:00", "git_commit": None, "stages": [stage]}  # fmt: skip
    summary = driver.markdown(report)
    assert summary.startswith("# trl_sdar GPU check: PASS\n\nNVIDIA H100, 79.1 GiB; Python 3.12.1")
    assert "| train_turn_hf | pass | 1.5 | steps_done=3" in summary and "a\\|b" in summary  # a | in a cell is escaped
