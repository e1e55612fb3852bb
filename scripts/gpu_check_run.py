"""The GPU check's driver (started by scripts/gpu_check.sh; standard library only, so it runs before any wheel is
installed). It runs the stages in order, each in a process of its own with a time limit, carries on after a
failure, and writes one report: `report.json` and `report.md` in the output folder, one log per stage in `logs/`.

Stages: install_wheels, environment, model, pytest_gpu, train_{episode,turn}_{hf,vllm}, eval. A stage passes, fails
or is skipped (with the reason: no --wheels given, vLLM not installed). The exit status is 1 when any stage failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE_SCRIPT = ROOT / "scripts" / "gpu_check_stage.py"
WHEEL_LIMIT_BYTES = 64 * 2**20
PEAK = "peak_cuda_allocated_mib"
# Longest each stage may take (seconds); every limit is also cut to what is left of the whole check's budget.
LIMITS = {"install_wheels": 180, "environment": 120, "model": 120, "pytest_gpu": 300, "train_hf": 180,
          "train_vllm": 300, "eval": 150}  # fmt: skip


@dataclass
class Stage:
    name: str
    status: str  # pass | fail | skipped
    seconds: float = 0.0
    message: str = ""
    numbers: dict = field(default_factory=dict)
    log: str | None = None  # relative to the output folder


class Check:
    """The state of one run: folders, the child environment, the deadline and the stages done so far."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = Path(args.out).resolve()
        self.work = Path(args.work).resolve()
        self.device = args.device
        self.started = time.time()
        self.deadline = self.started + args.budget_s
        self.stages: list[Stage] = []
        self.site: Path | None = None
        self.versions: dict = {}
        self.models: dict = {}
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------------------------------------------- plumbing
    def child_env(self) -> dict:
        env = dict(os.environ)
        paths = [str(self.site)] if self.site else []
        paths += [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env.update(
            PYTHONPATH=os.pathsep.join(paths), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false", TRL_EXPERIMENTAL_SILENCE="1", PYTHONUNBUFFERED="1",
            TRL_SDAR_CACHE=str(self.work / "cache"), HF_HOME=str(self.work / "hf_home"),
        )  # fmt: skip
        if self.device == "cpu":  # the dry run stays off any GPU this machine may have (children only)
            env["CUDA_VISIBLE_DEVICES"] = ""
            env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def spent(self) -> str:
        return f"not run: the check's {self.args.budget_s:g} s budget is spent"

    def limit(self, kind: str) -> float:
        return min(LIMITS[kind], self.deadline - time.time())

    def run(self, name: str, cmd: list[str], limit_s: float) -> tuple[int | None, float, str]:
        """Run `cmd` with its output in logs/<name>.log; returns (exit status or None on timeout, seconds, log)."""
        log = f"logs/{name}.log"
        start = time.perf_counter()
        with open(self.out / log, "w") as handle:
            handle.write(f"$ {' '.join(cmd)}\n")
            handle.flush()
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.child_env(), stdout=handle, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
            try:
                rc = proc.wait(timeout=max(limit_s, 1.0))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the stage's own process group (its launcher's children too)
                proc.wait()
                rc = None
        return rc, round(time.perf_counter() - start, 1), log

    def worker(self, name: str, kind: str, stage_args: list[str]) -> Stage:
        """Run one subcommand of gpu_check_stage.py and turn its JSON into a Stage."""
        limit_s = self.limit(kind)
        if limit_s < 10:
            return Stage(name, "fail", 0.0, self.spent())
        result_file = self.work / f"{name}.result.json"
        result_file.unlink(missing_ok=True)
        cmd = [sys.executable, str(STAGE_SCRIPT), *stage_args, "--device", self.device, "--json", str(result_file)]
        rc, seconds, log = self.run(name, cmd, limit_s)
        if rc is None:
            return Stage(name, "fail", seconds, f"timed out after {limit_s:.0f} s (see {log})", log=log)
        if not result_file.exists():
            return Stage(name, "fail", seconds, f"exited with status {rc} before reporting (see {log})", log=log)
        result = json.loads(result_file.read_text())
        status = "pass" if result["ok"] and rc == 0 else "fail"
        return Stage(name, status, seconds, result["message"], result["numbers"], log)

    def record(self, stage: Stage) -> Stage:
        self.stages.append(stage)
        mark = {"pass": "PASS", "fail": "FAIL", "skipped": "skip"}[stage.status]
        print(f"[gpu_check] {mark:4} {stage.name:<20} {stage.seconds:7.1f} s  {stage.message}", flush=True)
        return stage

    # ------------------------------------------------------------------------------------------------------ stages
    def install_wheels(self) -> Stage:
        if not self.args.wheels:
            return Stage("install_wheels", "skipped", message="no --wheels given: using the packages this Python has")
        folder = Path(self.args.wheels).resolve()
        requirements, manifest_file = folder / "requirements.txt", folder / "manifest.json"
        if not requirements.exists() or not manifest_file.exists():
            return Stage("install_wheels", "fail", message=f"{folder} has no requirements.txt/manifest.json: fill it "
                         "with `bash scripts/gpu_check_wheels.sh` on a machine with network")  # fmt: skip
        manifest = json.loads(manifest_file.read_text())
        numbers = {"folder": str(folder), "wheels": len(manifest["wheels"]), "wheel_bytes": manifest["total_bytes"],
                   "python_version": manifest["python_version"], "platform": manifest["platforms"]}  # fmt: skip
        here = f"{sys.version_info.major}.{sys.version_info.minor}"
        if manifest["python_version"] != here:
            why = f"the wheels are for Python {manifest['python_version']}, this is {here}"
            hint = f"rerun gpu_check_wheels.sh --python-version {here}"
            return Stage("install_wheels", "fail", message=f"{why}: {hint}", numbers=numbers)
        if manifest["total_bytes"] > WHEEL_LIMIT_BYTES:
            numbers["over_limit"] = True
        self.site = self.work / "site"
        shutil.rmtree(self.site, ignore_errors=True)  # a fresh target folder: no stale packages from an older run
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(folder),
               "--no-deps", "--target", str(self.site), "-r", str(requirements)]  # fmt: skip
        rc, seconds, log = self.run("install_wheels", cmd, self.limit("install_wheels"))
        if rc != 0:
            self.site = None
            why = "timed out" if rc is None else f"pip exited with status {rc}"
            return Stage("install_wheels", "fail", seconds, f"{why} (see {log}; is pip installed?)", numbers, log)
        message = f"{numbers['wheels']} wheels ({manifest['total_bytes'] / 2**20:.1f} MiB) into {self.site}"
        return Stage("install_wheels", "pass", seconds, message, numbers, log)

    def environment(self) -> Stage:
        stage = self.worker("environment", "environment", ["env"])
        self.versions = stage.numbers.get("versions", {})
        return stage

    def model(self) -> Stage:
        stage_args = ["model", "--out", str(self.work / "models")] + (["--wide"] if self.wants_vllm() else [])
        stage = self.worker("model", "model", stage_args)
        if stage.status == "pass":
            self.models = {"tiny": stage.numbers["tiny"], "wide": stage.numbers.get("wide")}
        return stage

    def pytest_gpu(self) -> Stage:
        files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                       if "mark.gpu" in p.read_text())  # fmt: skip
        junit = self.work / "pytest_gpu.xml"
        junit.unlink(missing_ok=True)
        limit_s = self.limit("pytest_gpu")
        if limit_s < 10:
            return Stage("pytest_gpu", "fail", message=self.spent())
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
               "--basetemp", str(self.work / "pytest_tmp"), "--junitxml", str(junit), *files]  # fmt: skip
        rc, seconds, log = self.run("pytest_gpu", cmd, limit_s)
        numbers = {"files": files, "exit_status": rc, **(junit_counts(junit) if junit.exists() else {})}
        if rc is None:
            return Stage("pytest_gpu", "fail", seconds, f"timed out after {limit_s:.0f} s (see {log})", numbers, log)
        counts = f"{numbers.get('passed', 0)} passed, {numbers.get('failed', 0)} failed, " \
                 f"{numbers.get('errors', 0)} errors, {numbers.get('skipped', 0)} skipped"  # fmt: skip
        if rc != 0 or "passed" not in numbers:
            return Stage("pytest_gpu", "fail", seconds, f"pytest exit status {rc}: {counts} (see {log})", numbers, log)
        if self.device == "cuda" and numbers["passed"] == 0:
            return Stage("pytest_gpu", "fail", seconds, f"{counts}: every GPU test skipped on a CUDA machine", numbers,
                         log)  # fmt: skip
        note = " (CPU dry run: the GPU tests skip themselves)" if self.device == "cpu" else ""
        return Stage("pytest_gpu", "pass", seconds, counts + note, numbers, log)

    def wants_vllm(self) -> bool:
        return self.device == "cuda" and bool(self.versions.get("vllm"))

    def train(self, unit: str, generation: str) -> Stage:
        name = f"train_{unit}_{generation}"
        if generation == "vllm" and not self.wants_vllm():
            why = "CPU dry run" if self.device == "cpu" else "vllm is not installed"
            return Stage(name, "skipped", message=f"{why}: HF generation only")
        model = self.models.get("wide" if generation == "vllm" else "tiny")
        if not model:
            return Stage(name, "fail", message="no model to train: the model stage failed")
        output_dir = self.work / name
        shutil.rmtree(output_dir, ignore_errors=True)  # `trl-sdar train` refuses a folder holding a finished run
        stage_args = ["train", "--model", model, "--unit", unit, "--generation", generation,
                      "--steps", str(self.args.steps), "--output_dir", str(output_dir)]  # fmt: skip
        return self.worker(name, f"train_{generation}", stage_args)

    def evaluate(self) -> Stage:
        trained = [self.work / n for n in ("train_turn_hf", "train_episode_hf")]
        adapters = [str(p) for p in trained if (p / "adapter_config.json").exists()]
        model = adapters[0] if adapters else self.models.get("tiny")
        if not model:
            return Stage("eval", "fail", message="no model to evaluate: the model and training stages failed")
        output = self.work / "eval_report.json"
        output.unlink(missing_ok=True)
        stage = self.worker("eval", "eval", ["eval", "--model", model, "--num-tasks", str(self.args.eval_tasks),
                                             "--output", str(output)])  # fmt: skip
        if not adapters:
            stage.message += " (untrained base model: no training stage saved an adapter)"
        return stage

    # ------------------------------------------------------------------------------------------------------ report
    def report(self) -> dict:
        ok = all(s.status != "fail" for s in self.stages)
        env = next((s.numbers for s in self.stages if s.name == "environment"), {})
        machine = {"hostname": platform.node(), "platform": platform.platform(), "python": platform.python_version()}
        machine.update({k: env[k] for k in ("gpu", "gpu_memory_gib", "compute_capability", "torch_cuda") if k in env})
        return {
            "check": "trl_sdar GPU check (scripts/gpu_check.sh)",
            "ok": ok,
            "device": self.device,
            "dry_run": self.device == "cpu",
            "precision": "bf16" if self.device == "cuda" else "fp32",
            "started_utc": datetime.fromtimestamp(self.started, timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.time() - self.started, 1),
            "budget_s": self.args.budget_s,
            "command": sys.argv,
            "git_commit": git_commit(),
            "machine": machine,
            "versions": self.versions,
            "failed": [s.name for s in self.stages if s.status == "fail"],
            "stages": [asdict(s) for s in self.stages],
        }


def junit_counts(path: Path) -> dict:
    """Passed / failed / errors / skipped from pytest's JUnit XML, with the skip reasons and failing test ids."""
    cases = list(ET.parse(path).getroot().iter("testcase"))
    failed, errors, reasons = [], [], Counter()
    for case in cases:
        test = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None:
            failed.append(test)
        elif case.find("error") is not None:
            errors.append(test)
        elif (skip := case.find("skipped")) is not None:
            reasons[(skip.get("message") or "").strip()[:120]] += 1
    skipped = sum(reasons.values())
    return {"tests": len(cases), "passed": len(cases) - len(failed) - len(errors) - skipped, "failed": len(failed),
            "errors": len(errors), "skipped": skipped, "failed_tests": failed + errors,
            "skip_reasons": dict(reasons)}  # fmt: skip


def git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def markdown(report: dict) -> str:
    """A short summary: verdict, machine, one table row per stage with its key numbers."""
    verdict = "PASS" if report["ok"] else f"FAIL ({', '.join(report['failed'])})"
    machine = report["machine"]
    where = machine.get("gpu", "CPU (dry run)") + (f", {machine['gpu_memory_gib']} GiB" if "gpu" in machine else "")
    lines = [
        f"# trl_sdar GPU check: {verdict}",
        "",
        f"{where}; Python {machine['python']}; torch {report['versions'].get('torch')}, "
        f"trl {report['versions'].get('trl')}, transformers {report['versions'].get('transformers')}, "
        f"peft {report['versions'].get('peft')}; precision {report['precision']}; "
        f"{report['seconds']:.0f} s in all (budget {report['budget_s']:g} s); started {report['started_utc']}; "
        f"commit {(report['git_commit'] or 'unknown')[:12]}.",
        "",
        "| stage | result | seconds | key numbers | message |",
        "|---|---|---:|---|---|",
    ]
    for stage in report["stages"]:
        message = stage["message"].replace("|", "\\|")
        lines.append(f"| {stage['name']} | {stage['status']} | {stage['seconds']:.1f} | {key_numbers(stage)} | "
                     f"{message} |")  # fmt: skip
    lines += ["", "Full numbers: report.json; each stage's output: logs/<stage>.log.", ""]
    return "\n".join(lines)


def key_numbers(stage: dict) -> str:
    n = stage["numbers"]
    keys = {
        "train": ("steps_done", "loss_finite", "last_loss", "median_step_s", "gate_mean_last", PEAK),
        "eval": ("episodes", "success_rate", "valid_format_rate", PEAK),
        "pytest_gpu": ("passed", "failed", "errors", "skipped"),
        "install_wheels": ("wheels", "wheel_bytes"),
        "model": ("tiny_params", "tiny_weight_bytes"),
        "environment": ("python", "gpu", "torch_cuda", "bf16_supported"),
    }[stage["name"].split("_")[0] if stage["name"].startswith("train") else stage["name"]]
    shown = [f"{k}={_short(n[k])}" for k in keys if k in n and n[k] is not None]
    return ", ".join(shown)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/gpu_check.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check_report", help="report folder (default: gpu_check_report)")
    parser.add_argument("--work", default=str(ROOT / "gpu_check_work"),
                        help="scratch: models, runs, installed wheels (default: gpu_check_work/)")  # fmt: skip
    parser.add_argument("--wheels", default=None, help="folder filled by scripts/gpu_check_wheels.sh to install from")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cuda (the check) or cpu (a dry run: fp32, the GPU tests skip)")  # fmt: skip
    parser.add_argument("--budget-s", type=float, default=None,
                        help="time for the whole check (default: 450 on cuda, 1200 on cpu)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per training stage (default 3)")
    parser.add_argument("--eval-tasks", type=int, default=8, help="tasks evaluated, each with 2 seeds (default 8)")
    args = parser.parse_args(argv)
    if args.budget_s is None:
        args.budget_s = 450.0 if args.device == "cuda" else 1200.0
    return args


def main(argv: list[str] | None = None) -> int:
    check = Check(parse_args(argv))
    print(f"[gpu_check] device {check.device}, report in {check.out}, budget {check.args.budget_s:g} s", flush=True)
    check.record(check.install_wheels())
    check.record(check.environment())
    check.record(check.model())
    check.record(check.pytest_gpu())
    for generation in ("hf", "vllm"):
        for unit in ("episode", "turn"):
            check.record(check.train(unit, generation))
    check.record(check.evaluate())
    report = check.report()
    (check.out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    (check.out / "report.md").write_text(markdown(report))
    verdict = "PASS" if report["ok"] else f"FAIL: {', '.join(report['failed'])}"
    print(f"[gpu_check] {verdict} in {report['seconds']:.0f} s; report: {check.out / 'report.md'}", flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
