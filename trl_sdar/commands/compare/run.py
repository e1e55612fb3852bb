"""Run a comparison: every planned training run, the evaluations, the summary and the plots."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from trl_sdar.commands.compare.report import build_summary, results_markdown, seed_result
from trl_sdar.commands.compare.runner import (
    eval_argv,
    eval_manifest,
    evaluate,
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


def run_compare(spec: CompareSpec, progress=_progress, smooth: float = 0.0) -> dict[str, Any]:
    """Train what is not finished, evaluate what is not evaluated, write summary.json, results.md and plots/."""
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
        base_reports[key] = evaluate(eval_argv(spec, model, manifest, skills), path, f"starting model ({key})",
                                     progress)  # fmt: skip
    rows = []
    for index, plan in enumerate(plans, start=1):
        progress(f"run {index}/{len(plans)}: {plan.method} seed {plan.seed}")
        record = train_run(plan, progress)
        skills = _student_sees_skills(plan.recipe)
        argv = eval_argv(spec, str(plan.run_dir), manifest, skills)
        after = evaluate(argv, plan.run_dir / "compare_eval.json", f"{plan.method} seed {plan.seed}", progress)
        before = base_reports["student_sees_skills" if skills else "plain"]
        rows.append(seed_result(plan.method, plan.seed, plan.run_dir, record, before, after))
    info = _spec_info(spec, manifest, len(next(iter(base_reports.values()))["task_ids"]))
    summary = build_summary(info, rows, base_reports, time_reference(spec))
    figures = _write_figures(spec, plans, rows, smooth)
    (spec.output_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    (spec.output_dir / "results.md").write_text(results_markdown(summary, figures))
    progress(f"wrote {spec.output_dir / 'summary.json'}, {spec.output_dir / 'results.md'} and {len(figures)} plots")
    return summary


def _write_figures(spec: CompareSpec, plans: list, rows: list[dict], smooth: float) -> list[Path]:
    """plots/methods_training.png (curves per method over seeds) and plots/methods_eval.png (eval success)."""
    from trl_sdar.commands.plot.figures import build_method_figures, method_eval_figure

    out = spec.output_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[Path]] = {}
    for plan in plans:
        groups.setdefault(plan.method, []).append(plan.run_dir)
    figures = build_method_figures(groups, smooth)
    before = {row["method"]: row["success_before"] for row in rows}
    after: dict[str, list[float]] = {}
    for row in rows:
        after.setdefault(row["method"], []).append(row["success_after"])
    figures["methods_eval.png"] = method_eval_figure(before, after)
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=120)
    return [out / name for name in figures]
