#!/usr/bin/env python
"""The whole-step SDAR/GRPO benchmark of `overhead.py` over a grid: context tokens x finetune x layout.

Each grid point is one `overhead.run_benchmark` (GRPO and one SDAR arm per `--kinds` teacher kind, trained side by
side), every other flag of `overhead.py` the same for all points. `--context-tokens`, `--finetune` and
`--layout` take comma-separated values (defaults `250,500,1000,2000`, `lora,full`, `episode,turn`); `--kinds`
defaults to `live,base,ema`. The JSON at `--output` holds the full report of every finished point under `points`
and is rewritten after each point, so a killed sweep keeps what it finished and the same command run again skips
those points (a point recorded there with other settings is an error: use another `--output`). A point that fails
is kept under `failed` with its error, the sweep goes on, and the next run tries it again. At the end: one row per
point with its rows and tokens per step and, per teacher kind, the SDAR/GRPO step-time and peak-memory ratios.

    python benchmarks/sweep.py --model smollm2 --steps 3 --batch 16 --num-generations 4 \\
        --max-completion-length 64 --turns 4 --output outputs/bench_sweep.json
"""

from __future__ import annotations

import gc
import itertools
import json
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness & co., when loaded by path (tests)

import overhead as bench  # noqa: E402
from harness import flag, settings_from, settings_parser, write_json  # noqa: E402

GRID = {"context_tokens": "250,500,1000,2000", "finetune": "lora,full", "layout": "episode,turn"}
DEFAULT_KINDS = "live,base,ema"


# ---------------------------------------------------------------------------------------------------------- grid
def grid_values(key: str, text: str) -> list:
    """The distinct comma-separated values of grid field `key`, converted to the field's type."""
    kind = type(getattr(bench.Settings(), key))
    items = list(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))
    if not items:
        raise ValueError(f"{flag(key)}={text!r} is not valid; expected a comma-separated list of values.")
    try:
        return [kind(item) for item in items]
    except ValueError:
        raise ValueError(
            f"{flag(key)}={text!r} is not valid; expected comma-separated {kind.__name__} values."
        ) from None


def grid_points(base: bench.Settings, grid: dict[str, str]) -> list[bench.Settings]:
    """Every combination of the grid's values on top of `base`, in grid order; each one validated."""
    values = {key: grid_values(key, text) for key, text in grid.items()}
    points = [replace(base, **dict(zip(values, combo, strict=True))) for combo in itertools.product(*values.values())]
    for point in points:
        point.validate()
    return points


def point_key(settings: bench.Settings) -> str:
    return "/".join(f"{key}={getattr(settings, key)}" for key in GRID)


def parse_args(argv: list[str] | None = None) -> tuple[list[bench.Settings], str]:
    parser = settings_parser(bench.Settings, __doc__.split("\n\n")[0], lists=GRID)
    parser.set_defaults(kinds=DEFAULT_KINDS)
    parser.add_argument("--output", default="outputs/bench_sweep.json")
    args = parser.parse_args(argv)
    if args.teacher_only:
        parser.error("--teacher-only is not a whole-step benchmark; run overhead.py --teacher-only instead.")
    base = settings_from(args, bench.Settings, skip=GRID)
    try:
        points = grid_points(base, {key: getattr(args, key) for key in GRID})
    except ValueError as exc:
        parser.error(str(exc))
    return points, args.output


# --------------------------------------------------------------------------------------------------------- sweep
def load_sweep(output: Path) -> dict[str, Any]:
    if not output.exists():
        return {"points": {}, "failed": {}}
    sweep = json.loads(output.read_text())
    sweep.setdefault("failed", {})
    return sweep


def recorded_with(entry: dict[str, Any], settings: bench.Settings, key: str, output: Path) -> None:
    """Raise if the point `key` in `output` was measured with other settings than `settings`."""
    wanted = asdict(settings)
    differ = {k: (entry["settings"].get(k), v) for k, v in wanted.items() if entry["settings"].get(k) != v}
    if differ:
        changes = ", ".join(f"{flag(k)} {old!r} there vs {new!r} now" for k, (old, new) in differ.items())
        raise ValueError(f"{output} holds {key} measured with other settings ({changes}); use another --output.")


def run_sweep(points: list[bench.Settings], output: str | Path, verbose: bool = False) -> dict[str, Any]:
    """Run every point not yet in `output`, rewriting `output` after each; return the whole sweep."""
    output = Path(output)
    sweep = load_sweep(output)
    for point in points:  # before anything runs: a file of another sweep is refused at once
        if point_key(point) in sweep["points"]:
            recorded_with(sweep["points"][point_key(point)], point, point_key(point), output)
    for i, point in enumerate(points, 1):
        key = point_key(point)
        if key in sweep["points"]:
            print(f"[sweep] {i}/{len(points)} {key}: in {output}, skipped", file=sys.stderr, flush=True)
            continue
        start = time.perf_counter()
        try:
            sweep["points"][key] = bench.run_benchmark(point, None, verbose=verbose)
            sweep["failed"].pop(key, None)
            status = "done"
        except Exception as exc:  # one point failing (e.g. out of memory) leaves the others to run
            sweep["failed"][key] = {"settings": asdict(point), "error": repr(exc)}
            status = f"failed: {exc!r}"
        write_json(output, sweep)
        print(f"[sweep] {i}/{len(points)} {key}: {status} in {time.perf_counter() - start:.0f} s",
              file=sys.stderr, flush=True)  # fmt: skip
        _free_memory()
    return sweep


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------------------- table
def _cell(value: Any, width: int, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return f"{'-':>{width}}"
    return f"{value:>{width}{spec}}"


def format_sweep(sweep: dict[str, Any], points: list[bench.Settings]) -> str:
    """One row per grid point: rows and tokens per step, then per kind the step-time and peak-memory ratios."""
    kinds = points[0].kind_list() if points else []
    head = f"{'context':>7} {'finetune':<8} {'layout':<7} {'rows':>5} {'tokens/step':>11}"
    lines = [head + "".join(f" {kind + ' step x':>12} {kind + ' mem x':>11}" for kind in kinds)]
    for point in points:
        key = point_key(point)
        row = f"{point.context_tokens:>7} {point.finetune:<8} {point.layout:<7}"
        report = sweep["points"].get(key)
        if report is None:
            error = sweep["failed"].get(key, {}).get("error", "not run")
            lines.append(f"{row} {error}")
            continue
        layout = report["layout"]
        row += f" {_cell(layout['rows_per_step'], 5, 'd')} {_cell(layout['tokens_per_step'], 11, ',')}"
        for kind in kinds:
            ratios = report["comparison"].get(f"sdar-{kind}", {}).get("ratios", {})
            row += f" {_cell(ratios.get('step_time'), 12, '.2f')} {_cell(ratios.get('peak_mem'), 11, '.2f')}"
        lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from trl_sdar.method.launch_check import refuse_multi_process

    refuse_multi_process("benchmarks/sweep.py")
    points, output = parse_args(argv)
    sweep = run_sweep(points, output, verbose=True)
    print(format_sweep(sweep, points))
    failed = [point_key(p) for p in points if point_key(p) in sweep["failed"]]
    print(f"wrote {output}: {len(points) - len(failed)} of {len(points)} points measured")
    if failed:
        raise SystemExit(f"{len(failed)} point(s) failed (run again to retry): {', '.join(failed)}")


if __name__ == "__main__":
    main()
