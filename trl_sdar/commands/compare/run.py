"""Run a comparison: every planned training run, the evaluations, the summary and the plots."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from trl_sdar.commands.compare.report import build_summary, results_markdown, seed_result
from trl_sdar.commands.compare.runner import (
    CompareRunError,
    eval_argv,
    eval_manifest,
    evaluate,
    is_finished,
    saved_eval,
    train_command,
    train_run,
)
from trl_sdar.commands.compare.spec import (
    CompareSpec,
    base_recipe_values,
    plan_runs,
    time_reference,
)


def _progress(message: str) -> None:
    print(f"[compare] {message}", file=sys.stderr, flush=True)


def _student_sees_skills(recipe: dict[str, Any]) -> bool:
    return bool(recipe.get("student_sees_skills", False))


def dry_run(spec: CompareSpec) -> list[str]:
    """The commands the comparison would run, one line each, training nothing. Each run's recipe is written to
    `<output_dir>/dry_run/<method>_seed<k>.yaml` (the run folders stay untouched), so every printed command runs
    as printed."""
    import yaml

    lines = []
    folder = spec.output_dir / "dry_run"
    folder.mkdir(parents=True, exist_ok=True)
    for plan in plan_runs(spec):
        recipe = folder / f"{plan.method}_seed{plan.seed}.yaml"
        recipe.write_text(yaml.safe_dump(plan.recipe, sort_keys=False))
        command = " ".join(["trl-sdar", *train_command(recipe, None)[3:]])
        overrides = spec.methods[plan.method] or "{}"
        lines.append(f"{command}   # {plan.method} seed {plan.seed} into {plan.run_dir}, overrides {overrides}")
    manifest = spec.eval.manifest if spec.eval.num_tasks is None else f"{spec.eval.manifest}[:{spec.eval.num_tasks}]"
    lines.append(f"eval: the starting model and every run on {manifest}, seeds {list(spec.eval.seeds)}")
    return lines


def _spec_info(spec: CompareSpec, manifest: str, task_count: int) -> dict[str, Any]:
    return {
        "name": spec.name,
        "base_recipe": str(spec.base_recipe),
        "model_name_or_path": base_recipe_values(spec)["model_name_or_path"],
        "seeds": list(spec.seeds),
        "method_overrides": spec.methods,
        "common_overrides": spec.overrides,
        "eval": {
            "manifest": spec.eval.manifest,
            "manifest_used": manifest,
            "num_tasks": task_count,
            "seeds": list(spec.eval.seeds),
            "temperature": spec.eval.temperature,
        },  # fmt: skip
    }


def run_compare(spec: CompareSpec, progress=_progress, smooth: float = 0.0,
                summary_only: bool = False) -> dict[str, Any]:  # fmt: skip
    """Train what is not finished, evaluate what is not evaluated, write summary.json, results.md and plots/.
    With `summary_only`, train and evaluate nothing: summarise the runs that are trained and evaluated, and list
    the others in the summary's `missing_runs` (a second process may still be training them)."""
    import json

    plans = plan_runs(spec)
    if len(spec.seeds) < 3:
        progress(f"{len(spec.seeds)} seed(s): fewer than 3, so the spread over seeds says little")
    manifest = eval_manifest(spec)
    model = base_recipe_values(spec)["model_name_or_path"]
    base_reports: dict[str, dict] = {}
    for skills in sorted({_student_sees_skills(p.recipe) for p in plans}):
        key = "student_sees_skills" if skills else "plain"
        path = spec.output_dir / "base" / ("compare_eval_student_skills.json" if skills else "compare_eval.json")
        argv = eval_argv(spec, model, manifest, skills)
        if summary_only:
            base_reports[key] = _saved_or_error(argv, path, f"the starting model ({key})")
        else:
            base_reports[key] = evaluate(argv, path, f"starting model ({key})", progress)
    rows, missing = [], []
    for index, plan in enumerate(plans, start=1):
        skills = _student_sees_skills(plan.recipe)
        argv = eval_argv(spec, str(plan.run_dir), manifest, skills)
        report_path = plan.run_dir / "compare_eval.json"
        after = None
        if summary_only:
            finished = is_finished(plan.run_dir)
            after = saved_eval(argv, report_path) if finished else None
            if after is None:
                reason = "not evaluated" if finished else "not trained"
                progress(f"missing {plan.method} seed {plan.seed}: {reason} ({plan.run_dir})")
                missing.append({"method": plan.method, "seed": plan.seed, "reason": reason})
                continue
        progress(f"run {index}/{len(plans)}: {plan.method} seed {plan.seed}")
        record = train_run(plan, progress)
        after = after or evaluate(argv, report_path, f"{plan.method} seed {plan.seed}", progress)
        before = base_reports["student_sees_skills" if skills else "plain"]
        rows.append(seed_result(plan.method, plan.seed, plan.run_dir, record, before, after))
    if not rows:
        raise CompareRunError(f"--summary-only: no run of {spec.output_dir} is trained and evaluated yet; "
                              "run `trl-sdar compare` without it to train them")  # fmt: skip
    info = _spec_info(spec, manifest, len(next(iter(base_reports.values()))["task_ids"]))
    summary = build_summary(info, rows, base_reports, time_reference(spec))
    if summary_only:
        summary["missing_runs"] = missing
    figures = _write_figures(spec, rows, smooth)
    (spec.output_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    (spec.output_dir / "results.md").write_text(results_markdown(summary, figures))
    progress(f"wrote {spec.output_dir / 'summary.json'}, {spec.output_dir / 'results.md'} and {len(figures)} plots")
    return summary


def _saved_or_error(argv: list[str], path: Path, label: str) -> dict[str, Any]:
    report = saved_eval(argv, path)
    if report is None:
        raise CompareRunError(f"--summary-only: {label} has no evaluation with these settings at {path}; run "
                              "`trl-sdar compare` without it to make one")  # fmt: skip
    return report


def _write_figures(spec: CompareSpec, rows: list[dict], smooth: float) -> list[Path]:
    """plots/methods_training.png (curves per method over seeds) and plots/methods_eval.png (eval success), for the
    summarised runs (`rows`)."""
    from trl_sdar.commands.plot.figures import build_method_figures, method_eval_figure

    out = spec.output_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[Path]] = {}
    for row in rows:
        groups.setdefault(row["method"], []).append(Path(row["run_dir"]))
    figures = build_method_figures(groups, smooth)
    before = {row["method"]: row["success_before"] for row in rows}
    after: dict[str, list[float]] = {}
    for row in rows:
        after.setdefault(row["method"], []).append(row["success_after"])
    figures["methods_eval.png"] = method_eval_figure(before, after)
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=120)
    return [out / name for name in figures]
