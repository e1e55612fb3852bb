"""What every benchmark in this folder shares: arms measured side by side, the machine, memory, ratios, the report.

* Side by side: each arm runs in a thread of its own and they take turns step by step (`Turns`,
  `run_side_by_side`), or one loop times every arm per step, alternating which goes first (`turn_order`), so that a
  change of load on a shared machine hits every arm alike. `timed` times a call, waiting for CUDA on both ends.
* The machine: device, CPU, torch, threads, and the load average at the start and the end (`machine`, `end_load`).
* Memory: a step's transient peak (`Memory`), the tensors a trainer keeps between steps (`resident_mb`), the
  process's peak resident set (`peak_rss_mb`).
* Ratios of every arm to a reference arm (GRPO unless told), and whether they meet their targets (`compare`).
* One JSON report, standard (NaN/inf written as null) and replaced in one step (`write_json`).
* Command lines: one flag per field of a benchmark's settings dataclass (`settings_parser`, `settings_from`).

Benchmarks import it as `harness`: run as `python benchmarks/X.py`, this folder is first on `sys.path`; loaded by
path (tests), each benchmark puts its folder there itself.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import platform
import resource
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # trl_sdar from this checkout, installed or not


# ------------------------------------------------------------------------------------------------ side by side
class Turns:
    """One arm steps at a time, in a fixed cycle; an arm that finished (or failed) leaves the cycle."""

    def __init__(self, n: int):
        self.cond = threading.Condition()
        self.turn, self.active = 0, [True] * n

    def wait(self, i: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.turn == i)

    def _advance(self) -> None:
        n = len(self.active)
        for k in range(1, n + 1):
            if self.active[(self.turn + k) % n]:
                self.turn = (self.turn + k) % n
                return

    def done_step(self, i: int) -> None:
        with self.cond:
            if self.turn == i:
                self._advance()
            self.cond.notify_all()

    def leave(self, i: int) -> None:
        with self.cond:
            self.active[i] = False
            if self.turn == i:
                self._advance()
            self.cond.notify_all()


def run_side_by_side(arms: dict[str, Callable[[], None]], turns: Turns) -> None:
    """Run every arm in a thread of its own and wait for them all.

    Arm `i` (in the order of `arms`) brackets each of its steps with `turns.wait(i)` and `turns.done_step(i)`; it
    leaves the cycle when it returns or fails, so the others go on. The first failure is raised once all have ended.
    """
    errors: dict[str, BaseException] = {}

    def run(i: int, name: str, arm: Callable[[], None]) -> None:
        try:
            arm()
        except BaseException as exc:  # reported after the join; the other arms go on
            errors[name] = exc
        finally:
            turns.leave(i)

    threads = [threading.Thread(target=run, args=(i, *item), name=item[0]) for i, item in enumerate(arms.items())]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        name, exc = next(iter(errors.items()))
        raise RuntimeError(f"arm {name} failed: {exc!r}") from exc


def turn_order(names: Sequence[str], step: int) -> list[str]:
    """The order the arms take step `step` in, when one loop times them all: as given on even steps, reversed on odd
    ones, so that no arm always goes first."""
    return list(names) if step % 2 == 0 else list(names)[::-1]


def sync() -> None:
    """Wait for the GPU's queued work (nothing on CPU), so that a clock read after it counts that work."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """`fn(*args, **kwargs)` and the seconds it took, the GPU's queued work included."""
    sync()
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    sync()
    return out, time.perf_counter() - start


def measured(steps: Sequence[Any]) -> list[Any]:
    """The steps that count: all but the first (the warm-up), or the only one."""
    return list(steps[1:] or steps)


# ---------------------------------------------------------------------------------------------------- machine
def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    fallback = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return fallback
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), fallback)


def machine() -> dict[str, Any]:
    """The device, CPU, torch and its threads, the dtype the arms train in, and the load average now."""
    import torch

    return {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu x{os.cpu_count()}",
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "dtype": "bf16" if torch.cuda.is_available() else "fp32",
        "load_average_start": os.getloadavg(),
    }


def end_load(machine_info: dict[str, Any]) -> dict[str, Any]:
    """Add the load average at the end to a `machine()` record (returned too)."""
    machine_info["load_average_end"] = os.getloadavg()
    return machine_info


# ----------------------------------------------------------------------------------------------------- memory
def _proc_status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


class Memory:
    """A step's transient peak in MB: CUDA allocator peak, or (CPU) peak resident set over the step's start."""

    def __init__(self):
        import torch

        self.cuda = torch.cuda.is_available()
        try:
            self._trim = ctypes.CDLL("libc.so.6").malloc_trim
        except OSError:
            self._trim = None
        self._start = 0.0

    def begin(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated() / 2**20
            return
        if self._trim is not None:
            self._trim(0)  # hand freed heap back, so the other arms' last step does not lend this one memory
        try:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)
        except OSError:
            pass
        self._start = _proc_status_mb("VmRSS")

    def end(self) -> float:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**20 - self._start
        return _proc_status_mb("VmHWM") - self._start


def resident_mb(trainer) -> float:
    """MB of the distinct tensors a trainer keeps between steps: weights, buffers, teacher copy, optimizer state."""
    import torch

    tensors = list(trainer.model.parameters()) + list(trainer.model.buffers())
    teacher = getattr(trainer, "teacher", None)
    if teacher is not None and teacher.copy is not None:
        tensors += list(teacher.copy.parameters()) + list(teacher.copy.buffers())
    if trainer.optimizer is not None:
        for state in trainer.optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    seen, total = set(), 0
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.device)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total / 2**20


def peak_rss_mb() -> float:
    """This process's peak resident set so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------------------------------- ratios
def ratio(a: float, b: float) -> float:
    """a / b, or NaN where b is not positive or either is not finite."""
    return a / b if b > 0 and math.isfinite(a) and math.isfinite(b) else float("nan")


def compare(
    arms: dict[str, dict[str, Any]],
    metrics: dict[str, str],
    targets: dict[str, float] | None = None,
    reference: str = "grpo",
) -> dict[str, dict[str, Any]]:
    """Every arm's ratios to the `reference` arm, one per `metrics` entry (ratio name -> the arms' key), and for
    each `targets` entry (ratio name -> limit) whether the ratio stays at or under the limit."""
    ref, out = arms[reference], {}
    for name, arm in arms.items():
        if name == reference:
            continue
        ratios = {key: ratio(arm[field], ref[field]) for key, field in metrics.items()}
        met = {key: bool(ratios[key] <= limit) for key, limit in (targets or {}).items()}
        out[name] = {"ratios": ratios, "targets_met": met}
    return out


# ----------------------------------------------------------------------------------------------------- report
def write_json(path: str | Path, data: Any) -> None:
    """Standard JSON (NaN/inf as null), replacing `path` in one step so a killed run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(_finite_or_none(data), indent=2))
    os.replace(partial, path)


def _finite_or_none(value: Any) -> Any:
    """NaN/inf -> None, so the JSON is standard."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


# -------------------------------------------------------------------------------------------------------- CLI
def flag(field_name: str) -> str:
    """The command-line flag of a settings field."""
    return f"--{field_name.replace('_', '-')}"


def settings_parser(
    settings_cls: type, description: str, lists: dict[str, str] | None = None
) -> argparse.ArgumentParser:
    """A parser with one flag per field of the dataclass `settings_cls` (default: the field's); a bool field is a
    switch; the fields named in `lists` take a comma-separated string (default: the value given there) that the
    caller splits."""
    lists = lists or {}
    parser = argparse.ArgumentParser(description=description)
    for key, value in asdict(settings_cls()).items():
        if key in lists:
            parser.add_argument(flag(key), default=lists[key], help=f"comma-separated (default {lists[key]})")
        elif isinstance(value, bool):
            parser.add_argument(flag(key), action="store_true")
        else:
            parser.add_argument(flag(key), type=type(value), default=value)
    return parser


def settings_from(args: argparse.Namespace, settings_cls: type, skip: Sequence[str] = ()):
    """A `settings_cls` from the parsed flags of its fields, less those in `skip` (left at their defaults)."""
    return settings_cls(**{key: getattr(args, key) for key in asdict(settings_cls()) if key not in skip})
