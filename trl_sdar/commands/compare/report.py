"""The comparison's results: per (method, seed) numbers read back from each run's eval report and log history,
per-method mean ± spread over seeds, time ratios, `summary.json` and `results.md`."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from trl_sdar.commands.compare.intervals import bootstrap_interval, wilson_interval
from trl_sdar.commands.plot.figures import LOG_HISTORY_FILE, load_log_history, mean_success

SEED_METRICS = (
    "success_before",
    "success_after",
    "success_gain",
    "score_before",
    "score_after",
    "valid_format_before",
    "valid_format_after",
    "train_wall_s",
    "train_runtime_s",
    "median_step_time_s",
    "train_success_mean",
    "final_teacher_gap",
    "final_gate_mean",
)


def _numbers(history: list[dict], key: str) -> list[float]:
    return [float(e[key]) for e in history if isinstance(e.get(key), (int, float)) and not isinstance(e[key], bool)]


def episode_wins(report: dict) -> dict[str, Any]:
    """Won episodes, episodes, and the 95% Wilson interval of the success rate, over every seed of an eval report."""
    episodes = [e for seed in report["per_seed"] for e in seed["episodes"]]
    wins = sum(bool(e["won"]) for e in episodes)
    return {"wins": wins, "episodes": len(episodes), "ci95": list(wilson_interval(wins, len(episodes)))}


def _train_runtime(run_dir: Path) -> float | None:
    """The Trainer's own `train_runtime` (seconds in `trainer.train`, without loading and saving)."""
    path = run_dir / LOG_HISTORY_FILE
    if not path.is_file():
        return None
    values = [e["train_runtime"] for e in json.loads(path.read_text()) if isinstance(e, dict) and "train_runtime" in e]
    return float(values[-1]) if values else None


def seed_result(method: str, seed: int, run_dir: Path, record: dict, before: dict, after: dict) -> dict[str, Any]:
    """One run's row: success and score before (the starting model) and after, with the episodes won and a 95%
    interval; the training episodes' success per step; times; final SDAR diagnostics."""
    history = load_log_history(run_dir)
    step_times = _numbers(history, "step_time")
    gaps, gates = _numbers(history, "sdar/teacher_gap_mean"), _numbers(history, "sdar/gate_mean")
    train_success = mean_success(history)[1]  # the training episodes' success rate at each logged step
    return {
        "method": method,
        "seed": seed,
        "run_dir": str(run_dir),
        "steps": history[-1]["step"],
        "success_before": before["success_rate"],
        "success_after": after["success_rate"],
        "success_gain": after["success_rate"] - before["success_rate"],
        "success_after_per_eval_seed": [s["success_rate"] for s in after["per_seed"]],
        "episodes_before": episode_wins(before),
        "episodes_after": episode_wins(after),
        "score_before": before["mean_score"],
        "score_after": after["mean_score"],
        "valid_format_before": before.get("valid_format_rate"),
        "valid_format_after": after.get("valid_format_rate"),
        "train_wall_s": record.get("wall_s"),
        "train_runtime_s": _train_runtime(run_dir),
        "median_step_time_s": statistics.median(step_times) if step_times else None,
        "step_times_s": step_times,
        "train_success_mean": statistics.fmean(train_success) if train_success else None,
        "train_success_per_step": train_success,
        "final_teacher_gap": gaps[-1] if gaps else None,
        "final_gate_mean": gates[-1] if gates else None,
        "resumed_from": record.get("resumed_from"),
    }


def spread(values: list[float | None]) -> dict[str, Any] | None:
    """Mean, sample std (None for one value), min, max and n of the known values; None when none is known."""
    known = [v for v in values if v is not None]
    if not known:
        return None
    std = statistics.stdev(known) if len(known) > 1 else None
    return {"mean": statistics.fmean(known), "std": std, "min": min(known), "max": max(known), "n": len(known)}


def method_summary(rows: list[dict]) -> dict[str, Any]:
    """Per metric, `spread` over the seeds; the gain in success also gets a 95% bootstrap interval of its mean."""
    summary = {metric: spread([row[metric] for row in rows]) for metric in SEED_METRICS}
    gains = [row["success_gain"] for row in rows if row["success_gain"] is not None]
    if summary["success_gain"] is not None:
        summary["success_gain"]["bootstrap_ci95"] = bootstrap_interval(gains)
    return summary


def paired_with_reference(methods: dict[str, list[dict]], reference: str) -> dict[str, dict[str, Any]]:
    """Per method, its held-out success after training minus the reference method's, seed by seed (the same seed
    draws the same training tasks and starts from the same model, so the pair shares everything but the method):
    the differences, their mean with a 95% bootstrap interval, and on how many seeds the method came out ahead."""
    theirs = {row["seed"]: row["success_after"] for row in methods.get(reference, [])}
    paired = {}
    for method, rows in methods.items():
        if method == reference:
            continue
        diffs = {row["seed"]: row["success_after"] - theirs[row["seed"]] for row in rows if row["seed"] in theirs}
        if not diffs:
            continue
        values = list(diffs.values())
        paired[method] = {"differences": diffs, "mean": statistics.fmean(values), "n": len(values),
                          "ahead": sum(v > 0 for v in values), "behind": sum(v < 0 for v in values),
                          "bootstrap_ci95": bootstrap_interval(values)}  # fmt: skip
    return paired


def training_curve(rows: list[dict]) -> list[dict[str, float]]:
    """The training episodes' success rate at each step over the seeds: mean, min and max (as many steps as the
    shortest run logged), the numbers behind the band of `methods_training.png`."""
    curves = [row["train_success_per_step"] for row in rows if row.get("train_success_per_step")]
    if not curves:
        return []
    return [
        {"step": i + 1, "mean": statistics.fmean(at), "min": min(at), "max": max(at)}
        for i, at in enumerate(zip(*curves))
    ]


def time_ratios(methods: dict[str, dict], reference: str) -> dict[str, dict[str, float | None]]:
    """Each method's mean median-step time and mean wall time divided by the reference method's."""

    def ratio(method: str, metric: str) -> float | None:
        if reference not in methods:  # a part of a comparison (--methods) without its reference
            return None
        mine, theirs = methods[method][metric], methods[reference][metric]
        if mine is None or theirs is None or theirs["mean"] == 0:
            return None
        return mine["mean"] / theirs["mean"]

    return {m: {"step_time": ratio(m, "median_step_time_s"), "train_wall": ratio(m, "train_wall_s")} for m in methods}


def build_summary(spec_info: dict, rows: list[dict], base_reports: dict[str, dict], reference: str) -> dict:
    methods = {}
    for row in rows:
        methods.setdefault(row["method"], []).append(row)
    per_method = {m: method_summary(rs) for m, rs in methods.items()}
    return {
        **spec_info,
        "time_reference": reference,
        "starting_model_eval": {k: _eval_brief(r) for k, r in base_reports.items()},
        "runs": rows,
        "methods": per_method,
        "time_ratios": time_ratios(per_method, reference),
        "paired_with_reference": paired_with_reference(methods, reference),
        "training_curves": {m: training_curve(rs) for m, rs in methods.items()},
    }


def _eval_brief(report: dict) -> dict:
    keys = ("success_rate", "success_rate_std", "mean_score", "per_task_type", "seeds", "temperature", "task_ids")
    return {k: report[k] for k in keys if k in report}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pm(stats: dict | None, digits: int = 3) -> str:
    if stats is None:
        return "n/a"
    std = "" if stats["std"] is None else f" ± {stats['std']:.{digits}f}"
    return f"{stats['mean']:.{digits}f}{std}"


def _interval(interval: tuple[float, float] | list[float] | None) -> str:
    return "" if interval is None else f" [{interval[0]:.3f}, {interval[1]:.3f}]"


def _gain(stats: dict | None) -> str:
    return _pm(stats) + _interval((stats or {}).get("bootstrap_ci95"))


def _wins(row: dict) -> str:
    before, after = row["episodes_before"], row["episodes_after"]
    low, high = after["ci95"]
    return f"{before['wins']} → {after['wins']} of {after['episodes']} ({low:.2f}–{high:.2f})"


def _paired_lines(summary: dict) -> list[str]:
    reference, paired = summary["time_reference"], summary.get("paired_with_reference") or {}
    if not paired:
        return []
    lines = [
        "",
        f"| method | success after − {reference}'s, same seed (mean [95% bootstrap]) | seeds ahead / behind / n | "
        "per seed |",
        "|---|---|---|---|",
    ]
    for method, p in paired.items():
        per_seed = ", ".join(f"{seed}: {d:+.3f}" for seed, d in p["differences"].items())
        counts = f"{p['ahead']} / {p['behind']} / {p['n']}"
        lines.append(f"| {method} | {p['mean']:+.3f}{_interval(p['bootstrap_ci95'])} | {counts} | {per_seed} |")
    return lines


def results_markdown(summary: dict, figures: list[Path]) -> str:
    """`results.md`: what was compared, one row per method (mean ± sample std over seeds), one row per run."""
    reference = summary["time_reference"]
    lines = [
        f"# Comparison `{summary['name']}`",
        "",
        f"* base recipe: `{summary['base_recipe']}`; starting model: `{summary['model_name_or_path']}`",
        f"* seeds: {summary['seeds']}; evaluation: `{summary['eval']['manifest']}` ({summary['eval']['num_tasks']} "
        f"tasks × eval seeds {summary['eval']['seeds']}, temperature {summary['eval']['temperature']})",
        f"* spread: mean ± sample std over training seeds (n each in the run table); [low, high]: 95% bootstrap "
        f"interval of the mean over seeds (scipy, percentile); time ratios divide by `{reference}`",
        "",
        "| method | overrides | success before | success after | Δ success | score after | train wall (s) | "
        f"median step (s) | step time / {reference} | wall / {reference} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, stats in summary["methods"].items():
        ratios = summary["time_ratios"][method]
        overrides = ", ".join(f"{k}: {v}" for k, v in summary["method_overrides"][method].items()) or "(base recipe)"
        lines.append(
            f"| {method} | {overrides} | {_pm(stats['success_before'])} | {_pm(stats['success_after'])} | "
            f"{_gain(stats['success_gain'])} | {_pm(stats['score_after'])} | {_pm(stats['train_wall_s'], 1)} | "
            f"{_pm(stats['median_step_time_s'], 2)} | {_fmt(ratios['step_time'], 2)} | "
            f"{_fmt(ratios['train_wall'], 2)} |"
        )
    lines += _paired_lines(summary)
    lines += [
        "",
        "| method | seed | steps | success before → after | episodes won before → after (95% interval after) | "
        "valid format before → after | score after | training success (mean over steps) | train wall (s) | "
        "median step (s) | final teacher gap | final gate |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary["runs"]:
        lines.append(
            f"| {row['method']} | {row['seed']} | {row['steps']} | {_fmt(row['success_before'])} → "
            f"{_fmt(row['success_after'])} | {_wins(row)} | "
            f"{_fmt(row['valid_format_before'])} → {_fmt(row['valid_format_after'])} | "
            f"{_fmt(row['score_after'])} | {_fmt(row['train_success_mean'])} | {_fmt(row['train_wall_s'], 1)} | "
            f"{_fmt(row['median_step_time_s'], 2)} | {_fmt(row['final_teacher_gap'])} | "
            f"{_fmt(row['final_gate_mean'])} |"
        )
    missing = summary.get("missing_runs")
    if missing:
        lines += ["", "Not in this summary (`--summary-only`): " + "; ".join(
            f"{m['method']} seed {m['seed']} ({m['reason']})" for m in missing) + "."]  # fmt: skip
    lines += ["", *[f"![{p.stem}](plots/{p.name})" for p in figures], ""]
    return "\n".join(lines)
