"""Running a comparison's pieces, resumably: each (method, seed) as `trl-sdar train` in a subprocess (so a recipe's
`accelerate_config` launches it exactly as the command line would), and each evaluation as `trl-sdar eval`.

Markers: a run is finished when its folder holds `train_summary.json` (written by `trl-sdar train` after the model
is saved); a run killed with checkpoints resumes from the newest one. `recipe.yaml` in the run folder is the exact
recipe it was trained with: a later spec that would train it differently is an error, never a silent mix. An
evaluation is `compare_eval.json`, reused while its `trl-sdar eval` arguments are unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from trl_sdar.commands.compare.spec import (
    CompareSpec,
    CompareSpecError,
    RunPlan,
    base_recipe_values,
    recipe_field_defaults,
)
from trl_sdar.commands.output_paths import checkpoint_step, complete_checkpoints

RECIPE_FILE, RUN_FILE, EVAL_FILE, LOG_FILE = "recipe.yaml", "compare_run.json", "compare_eval.json", "train.log"
FINISHED_MARKER = "train_summary.json"

Progress = Callable[[str], None]


class CompareRunError(RuntimeError):
    """A training run or evaluation of the comparison failed; the message names it and its log."""


def is_finished(run_dir: Path) -> bool:
    return (run_dir / FINISHED_MARKER).is_file()


def _resume_point(plan: RunPlan) -> Path | None:
    """The newest complete checkpoint of a run to resume from. One saved at `max_steps` (the run was killed before
    its final save) is passed over for the one before it: resuming is exact, and `Trainer` would train one step past
    `max_steps` from it."""
    max_steps = int(plan.recipe.get("max_steps", -1))
    found = [c for c in complete_checkpoints(plan.run_dir) if max_steps <= 0 or checkpoint_step(c) < max_steps]
    return found[-1] if found else None


def _check_same_recipe(plan: RunPlan) -> None:
    path = plan.run_dir / RECIPE_FILE
    if not path.is_file():
        return
    before = yaml.safe_load(path.read_text())
    if before != plan.recipe:
        changed = sorted(k for k in set(before) | set(plan.recipe) if before.get(k) != plan.recipe.get(k))
        raise CompareSpecError(
            f"{plan.run_dir} was trained with a different recipe (changed: {', '.join(changed)}); delete that folder "
            "or choose another output_dir."
        )


def train_command(recipe_path: Path, resume_from: Path | None) -> list[str]:
    command = [sys.executable, "-m", "trl_sdar.cli", "train", "--config", str(recipe_path)]
    return command + (["--resume_from_checkpoint", str(resume_from)] if resume_from else [])


def _child_env() -> dict[str, str]:
    from trl_sdar.commands.recipe.launch import LAUNCHED_ENV

    return {k: v for k, v in os.environ.items() if k != LAUNCHED_ENV}  # the child decides its own hand-off


def _last_error_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["(no output)"])[-1][:400]


def _exit_reason(code: int) -> str:
    if code >= 0:
        return f"exit {code}"
    oom = " (SIGKILL: often the out-of-memory killer; bound max_tokens_per_backward)" if code == -9 else ""
    return f"killed by signal {-code}{oom}"


def train_run(plan: RunPlan, progress: Progress) -> dict[str, Any]:
    """Train one run unless it is finished; returns its `compare_run.json` record (wall time, command, skipped)."""
    _check_same_recipe(plan)
    record_path = plan.run_dir / RUN_FILE
    if is_finished(plan.run_dir):
        progress(f"skip {plan.method} seed {plan.seed}: finished ({plan.run_dir})")
        record = json.loads(record_path.read_text()) if record_path.is_file() else {"wall_s": None}
        return {**record, "skipped": True}
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    recipe_path = plan.run_dir / RECIPE_FILE
    recipe_path.write_text(yaml.safe_dump(plan.recipe, sort_keys=False))
    resume = _resume_point(plan)
    command = train_command(recipe_path, resume)
    log = plan.run_dir / LOG_FILE
    note = f", resuming from {resume.name}" if resume else ""
    progress(f"train {plan.method} seed {plan.seed}{note}: log {log}")
    start = time.perf_counter()
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT, env=_child_env())
    wall = time.perf_counter() - start
    if code != 0 or not is_finished(plan.run_dir):
        raise CompareRunError(f"training {plan.method} seed {plan.seed} failed ({_exit_reason(code)}): "
                              f"{_last_error_line(log)} (log: {log})")  # fmt: skip
    record = {"wall_s": round(wall, 3), "command": command, "resumed_from": str(resume) if resume else None}
    record_path.write_text(json.dumps(record, indent=1))
    progress(f"trained {plan.method} seed {plan.seed} in {wall:.1f} s")
    return {**record, "skipped": False}


def _recipe_value(recipe: dict[str, Any], key: str, defaults: dict[str, Any]) -> Any:
    return recipe[key] if key in recipe else defaults[key]


def _eval_setting(spec: CompareSpec, recipe: dict[str, Any], defaults: dict[str, Any], name: str) -> Any:
    """An evaluation setting: the spec's `eval.<name>`, else the base recipe's value of the same key."""
    value = getattr(spec.eval, name)
    return _recipe_value(recipe, name, defaults) if value is None else value


def eval_manifest(spec: CompareSpec) -> str:
    """The manifest `trl-sdar eval` gets: the spec's, or (with `eval.num_tasks`) its first N tasks pinned in
    `<output_dir>/eval_manifest.json`. With task types, `trl-sdar eval` selects them and then takes the first
    N (`--task-types`, `--num-tasks`), so the whole manifest is passed on."""
    from trl_sdar.commands.manifests import load_manifest

    try:
        manifest = load_manifest(spec.eval.manifest)
    except ValueError as error:
        raise CompareSpecError(f"eval.manifest: {error}") from None
    recipe, defaults = base_recipe_values(spec), recipe_field_defaults()
    env_name = _recipe_value(recipe, "env_name", defaults)
    if manifest["env_name"] != env_name:
        raise CompareSpecError(
            f"eval.manifest={spec.eval.manifest!r} is for env_name={manifest['env_name']!r} but the base recipe "
            f"trains env_name={env_name!r}; pick a {env_name} manifest."
        )
    if spec.eval.num_tasks is None or _eval_setting(spec, recipe, defaults, "task_types"):
        return spec.eval.manifest
    ids = manifest["task_ids"]
    if spec.eval.num_tasks > len(ids):
        raise CompareSpecError(f"eval.num_tasks={spec.eval.num_tasks} is more than the {len(ids)} tasks of "
                               f"manifest {spec.eval.manifest!r}.")  # fmt: skip
    name = manifest.get("name", spec.eval.manifest)
    description = f"The first {spec.eval.num_tasks} tasks of {name}. {manifest.get('description', '')}"
    subset = {**manifest, "name": f"{name}[:{spec.eval.num_tasks}]", "task_ids": ids[: spec.eval.num_tasks],
              "description": description}  # fmt: skip
    path = spec.output_dir / "eval_manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(subset, indent=1)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return str(path)


def eval_argv(spec: CompareSpec, model: str, manifest: str, student_skills: bool) -> list[str]:
    """`trl-sdar eval` arguments for one model: the spec's eval settings, else the base recipe's agent loop."""
    recipe, defaults = base_recipe_values(spec), recipe_field_defaults()
    settings = spec.eval

    def pick(name: str) -> Any:
        return _eval_setting(spec, recipe, defaults, name)

    argv = ["eval", "--model", model, "--manifest", manifest, "--seeds", ",".join(map(str, settings.seeds)),
            "--temperature", str(settings.temperature), "--batch-size", str(settings.batch_size),
            "--rollout-unit", pick("rollout_unit"),
            "--parser", pick("parser"), "--max-turn-tokens", str(pick("max_turn_tokens")),
            "--env-source", _recipe_value(recipe, "env_source", defaults),
            "--env-difficulty", _recipe_value(recipe, "env_difficulty", defaults)]  # fmt: skip
    if pick("max_turns") is not None:
        argv += ["--max-turns", str(pick("max_turns"))]
    if pick("history_window") is not None:  # None: the benchmark's (eval picks it)
        argv += ["--history-window", str(pick("history_window"))]
    if pick("rollout_unit") == "episode":
        argv += ["--max-episode-tokens", str(_recipe_value(recipe, "max_completion_length", defaults))]
    if _recipe_value(recipe, "env_data_dir", defaults):
        argv += ["--env-data-dir", str(recipe["env_data_dir"])]
    task_types = pick("task_types")
    if task_types:
        argv += ["--task-types", ",".join(task_types)]
        if settings.num_tasks is not None:
            argv += ["--num-tasks", str(settings.num_tasks)]
    return argv + (["--student-skills"] if student_skills else [])


def saved_eval(argv: list[str], report_path: Path) -> dict[str, Any] | None:
    """The report at `report_path` if it was made with these `trl-sdar eval` arguments on the manifest's current
    tasks, else None (`eval.num_tasks` rewrites the pinned manifest under the same path)."""
    from trl_sdar.commands.manifests import load_manifest

    if not report_path.is_file():
        return None
    report = json.loads(report_path.read_text())
    if report.get("eval_argv") != argv:
        return None
    if "--task-types" in argv:  # a shipped manifest, its first `--num-tasks` of those types: all in the arguments
        return report
    manifest = load_manifest(argv[argv.index("--manifest") + 1])
    return report if report.get("task_ids") == manifest["task_ids"] else None


def evaluate(argv: list[str], report_path: Path, label: str, progress: Progress) -> dict[str, Any]:
    """Run `trl-sdar eval` (in this process) unless `report_path` holds a report for the same arguments."""
    report = saved_eval(argv, report_path)
    if report is not None:
        progress(f"skip eval {label}: done ({report_path})")
        return report
    from trl_sdar.commands.evaluate import parse_eval_args, run_eval

    progress(f"eval {label}: trl-sdar {' '.join(argv)}")
    args = parse_eval_args(argv[1:])  # argv[0] is the command's name
    try:
        report = run_eval(args)
    except SystemExit as error:
        raise CompareRunError(f"evaluation of {label} failed: {error}") from None
    report = {"eval_argv": argv, **report}
    report_path.parent.mkdir(parents=True, exist_ok=True)
    partial = report_path.with_name(f".{report_path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(report, indent=1))
    partial.replace(report_path)  # whole or not at all: another compare process may read it (--methods)
    return report
