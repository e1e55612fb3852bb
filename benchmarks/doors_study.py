"""A doors study folder (`trl-sdar compare` output) read per door colour: the format-free test of whether a policy
uses the sign.

A one-room doors task's right door has one of three colours, and a policy whose choice ignores the sign opens colour
c with the same probability whatever the sign says, so its success rates P(win | the right door is c) add up to at
most 1; the rule makes them add up to 3. For every evaluation in the folder (the starting model's and each run's
`compare_eval.json`) this reports success overall and per colour and that sum; for every run, from its
`metrics.jsonl`, the training success per step (overall and per colour), the share of groups without reward spread,
the share of format-invalid turns, SDAR's teacher gap and gate, the policy's token entropy, the gradient norm and
the step time.

    python benchmarks/doors_study.py outputs/study/compare_doors1_turn1 \\
        --output docs/results/study_doors1_turn1_evals.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import write_json  # noqa: E402

from trl_sdar.method.metrics_log import read_metrics_jsonl  # noqa: E402

SUCCESS, BY_COLOUR = "env/doors/success", "env/doors/success/"
PER_STEP = {  # report name -> logged metric
    "frac_reward_zero_std": "frac_reward_zero_std",
    "invalid_rate": "env/doors/invalid_rate",
    "teacher_gap_mean": "sdar/teacher_gap_mean",
    "gate_mean": "sdar/gate_mean",
    "entropy": "entropy",  # the policy's mean token entropy on the step's sampled completions (TRL's log)
    "grad_norm": "grad_norm",
    "step_time_s": "step_time",
}


def evaluation(report: dict[str, Any]) -> dict[str, Any]:
    """One `compare_eval.json` by colour: success, valid format, success per colour and their sum, per eval seed."""
    per_colour = report["per_task_type"]
    return {
        "success_rate": report["success_rate"],
        "valid_format_rate": report["valid_format_rate"],
        "per_task_type": per_colour,
        "per_colour_sum": sum(per_colour.values()),
        "success_per_eval_seed": [s.get("success_rate") for s in report.get("per_seed", [])],
    }


def training(entries: list[dict[str, Any]]) -> dict[str, list]:
    """A run's logged steps (those with doors success), one list per quantity, in step order."""
    steps = [e for e in entries if SUCCESS in e]
    curves: dict[str, list] = {
        "success": [e[SUCCESS] for e in steps],
        "success_per_colour": [
            {k.removeprefix(BY_COLOUR): v for k, v in e.items() if k.startswith(BY_COLOUR)} for e in steps
        ],
    }
    curves.update({name: [e.get(metric) for e in steps] for name, metric in PER_STEP.items()})
    return curves


def read_study(root: Path) -> dict[str, Any]:
    """Every evaluation and every run's training curves of the study folder `root`, keyed by their path in it."""
    return {
        "evals": {
            str(p.parent.relative_to(root)): evaluation(json.loads(p.read_text()))
            for p in sorted(root.glob("**/compare_eval.json"))
        },
        "training": {
            str(p.parent.relative_to(root)): training(read_metrics_jsonl(p))
            for p in sorted(root.glob("runs/*/seed*/metrics.jsonl"))
        },
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study", type=Path, help="a `trl-sdar compare` output folder of a one-room doors study")
    p.add_argument("--output", type=Path, default=None, help="write the JSON report here")
    args = p.parse_args(argv)
    if not (args.study / "base" / "compare_eval.json").is_file():
        p.error(f"{str(args.study)!r} holds no base/compare_eval.json: expected a trl-sdar compare output folder")
    report = {"study": str(args.study), **read_study(args.study)}
    for name, row in report["evals"].items():
        colours = " ".join(f"{c.removeprefix('door_')} {v:.2f}" for c, v in row["per_task_type"].items())
        print(f"{name:36s} success {row['success_rate']:.3f}  per colour {colours}  sum {row['per_colour_sum']:.2f}")
    if args.output:
        write_json(args.output, report)
    return report


if __name__ == "__main__":
    main()
