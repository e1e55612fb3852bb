"""One `trl-sdar compare` summary from several made by the same spec in different places (sessions, machines, output
folders): every run's row kept once, and the per-method statistics, the pairing with the time reference and the
training curves computed again over all of them, as `trl-sdar compare` itself computes them.

The parts must agree on what makes runs comparable: the spec's name, base recipe, starting model, common overrides,
evaluation settings, each shared method's overrides, and the starting model's evaluated success (a warm start re-made
elsewhere must evaluate the same, or it is not the same starting model). A (method, seed) run found in two parts is
an error. Time ratios mix the parts' machines and loads: read them only when the parts ran under the same conditions.

    python benchmarks/merge_summaries.py docs/results/study_doors1_turn1_summary.json \\
        outputs/study/compare_doors1_turn1/summary.json --output docs/results/study_doors1_turn1_summary.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trl_sdar.commands.compare.report import build_summary, results_markdown  # noqa: E402

SHARED = ("name", "base_recipe", "model_name_or_path", "common_overrides", "eval")


class MergeError(ValueError):
    """Parts that are not runs of one comparison."""


def _starting_success(summary: dict[str, Any]) -> dict[str, Any]:
    return {key: report.get("success_rate") for key, report in summary["starting_model_eval"].items()}


def merge(parts: list[dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    """The summary over every run of `parts` (summary.json contents; `labels` name them in errors)."""
    first = parts[0]
    overrides: dict[str, dict] = {}
    rows: dict[tuple[str, int], dict] = {}
    where: dict[tuple[str, int], str] = {}
    for part, label in zip(parts, labels):
        for key in SHARED:
            if part[key] != first[key]:
                raise MergeError(f"{label}: {key}={part[key]!r} differs from {labels[0]}'s {first[key]!r}")
        if _starting_success(part) != _starting_success(first):
            raise MergeError(f"{label}: the starting model's success {_starting_success(part)} differs from "
                             f"{labels[0]}'s {_starting_success(first)}: not the same starting model")  # fmt: skip
        for method, values in part["method_overrides"].items():
            if overrides.setdefault(method, values) != values:
                raise MergeError(f"{label}: method {method!r} has overrides {values!r}, "
                                 f"elsewhere {overrides[method]!r}")  # fmt: skip
        for row in part["runs"]:
            run = (row["method"], row["seed"])
            if run in rows:
                raise MergeError(f"{label}: {run[0]} seed {run[1]} is also in {where[run]}; keep it in one part")
            rows[run], where[run] = row, label
    methods = list(overrides)
    ordered = sorted(rows, key=lambda run: (methods.index(run[0]), run[1]))
    info = {key: first[key] for key in SHARED}
    info["seeds"] = sorted({seed for _, seed in ordered})
    info["method_overrides"] = {m: overrides[m] for m in methods if any(run[0] == m for run in ordered)}
    summary = build_summary(info, [rows[run] for run in ordered], {}, first["time_reference"])
    summary["starting_model_eval"] = first["starting_model_eval"]
    summary["merged_from"] = {label: sorted(f"{m} seed {s}" for (m, s), w in where.items() if w == label)
                              for label in labels}  # fmt: skip
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("summaries", nargs="+", type=Path, help="summary.json files of one comparison spec")
    parser.add_argument("--output", type=Path, required=True, help="the merged summary (JSON)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables as this markdown file")
    args = parser.parse_args(argv)
    parts = [json.loads(path.read_text()) for path in args.summaries]
    try:
        summary = merge(parts, [str(path) for path in args.summaries])
    except MergeError as err:
        parser.exit(2, f"merge_summaries: error: {err}\n")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2) + "\n")
    if args.markdown is not None:
        args.markdown.write_text(results_markdown(summary, []))
    print(f"{len(summary['runs'])} runs of {len(summary['methods'])} methods -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
