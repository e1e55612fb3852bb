"""`trl-sdar eval`: a model checkpoint or a scripted policy over a pinned task list, as one JSON report."""

from __future__ import annotations

import argparse
import json
import sys
import time

from trl_sdar.commands.errors import one_line_errors
from trl_sdar.commands.manifests import load_manifest
from trl_sdar.commands.output_paths import report_path
from trl_sdar.envs import ENV_CLASSES


def _eval_setup(args: argparse.Namespace):
    from trl_sdar.commands.environments import env_kwargs
    from trl_sdar.envs import make_env

    manifest = load_manifest(args.manifest) if args.manifest else None
    env_name = manifest["env_name"] if manifest else args.env
    if env_name is None:
        raise ValueError("give --env or --manifest")
    if manifest and args.env is not None and args.env != env_name:
        raise ValueError(
            f"--env {args.env} contradicts --manifest {args.manifest!r}, whose tasks are {env_name} tasks; drop "
            f"--env (the manifest names its environment) or give a {args.env} manifest."
        )
    if manifest and manifest["env_name"] not in ENV_CLASSES:
        raise ValueError(f"manifest env_name={manifest['env_name']!r} is not one of {sorted(ENV_CLASSES)}")
    whole_file = not manifest and args.questions_path is not None and args.num_tasks is None
    if manifest:
        task_ids = list(manifest["task_ids"])
    elif whole_file:  # the reference evaluates every question of the test file
        task_ids = list(range(make_env(env_name, questions_path=args.questions_path).num_tasks))
    else:
        task_ids = list(range(args.task_start, args.task_start + (args.num_tasks or 20)))
    kwargs = env_kwargs(env_name, source=args.env_source, data_dir=args.env_data_dir, difficulty=args.env_difficulty,
                        max_task_id=max(task_ids), questions_path=args.questions_path,
                        retriever_url=args.retriever_url, task_order_seed=None,
                        options={**(manifest or {}).get("env_kwargs", {}), **(args.env_options or {})})  # fmt: skip
    if args.task_types:
        from trl_sdar.envs.selection import select_task_types

        env = make_env(env_name, **kwargs)
        try:
            widen = "use a manifest that has such tasks" if manifest else "raise --num-tasks or move --task-start"
            task_ids = select_task_types(env, task_ids, args.task_types, field="--task-types", widen=widen)
        finally:
            env.close()
    if manifest and args.num_tasks is not None:
        if args.num_tasks > len(task_ids):
            of_types = f" of types {args.task_types}" if args.task_types else ""
            raise ValueError(f"--num-tasks={args.num_tasks} is more than the {len(task_ids)} tasks{of_types} of "
                             f"the manifest {args.manifest!r}.")  # fmt: skip
        task_ids = task_ids[: args.num_tasks]
    return env_name, task_ids, lambda: make_env(env_name, **kwargs)


def _games_by_path(factory, task_ids: list[int]) -> list[str]:
    """Each task's game path relative to its split (real ALFWorld's `Task.info["game"]`); empty for other tasks."""
    env = factory()
    try:
        games = [env.task(task_id).info.get("game") for task_id in task_ids]
    finally:
        env.close()
    return games if all(games) else []


def run_eval(args: argparse.Namespace) -> dict:
    """`trl-sdar eval`: the report (also printed, and written to `--output`)."""
    with one_line_errors("eval"):
        return _run_eval(args)


def _run_eval(args: argparse.Namespace) -> dict:
    from trl_sdar.commands.evaluate.policy import evaluate_model, evaluate_policy, load_policy, summarize

    output = report_path(args.output)  # checked before any episode runs (an existing folder gets eval_report.json)
    env_name, task_ids, factory = _eval_setup(args)
    if args.history_window is None:
        from trl_sdar.commands.environments import default_history_window

        args.history_window = default_history_window(env_name)
    start, who = time.perf_counter(), args.model or args.policy

    def progress(done: int, total: int) -> None:
        print(f"\r[eval] {env_name} {who}: {done}/{total} episodes", end="", file=sys.stderr, flush=True)

    if args.model:
        from trl_sdar.models import resolve_model_path

        model, tokenizer = load_policy(resolve_model_path(args.model))
        skills = None
        if args.student_skills:
            from trl_sdar.skills.task_context import skills_for

            skills = skills_for(env_name, args.skills)
        seeds = args.seeds
        summary = evaluate_model(
            model, tokenizer, factory, task_ids, seeds=seeds, temperature=args.temperature, max_turns=args.max_turns,
            max_turn_tokens=args.max_turn_tokens, max_episode_tokens=args.max_episode_tokens,
            batch_size=args.batch_size, student_skills=skills, progress=progress, rollout_unit=args.rollout_unit,
            history_window=args.history_window, parser=args.parser, transcripts=args.transcripts,
        )  # fmt: skip
        report = {"env": env_name, "model": args.model, "seeds": seeds, "temperature": args.temperature, **summary}
        report["agent_loop"] = {"rollout_unit": args.rollout_unit, "history_window": args.history_window,
                                "parser": args.parser}  # fmt: skip
    else:
        results = evaluate_policy(factory, task_ids, args.policy, seed=args.seed, max_turns=args.max_turns,
                                  num_workers=args.workers, progress=progress)  # fmt: skip
        report = {"env": env_name, "policy": args.policy, "seed": args.seed, **summarize(results)}
    print(file=sys.stderr)
    report["task_ids"] = task_ids
    games = _games_by_path(factory, task_ids)
    if games:  # real ALFWorld: which game each task id named, so a report pins its games by path
        report["games"] = games
    report["manifest"] = args.manifest
    report["task_types"] = args.task_types
    report["seconds"] = round(time.perf_counter() - start, 2)
    spread = f" ± {report['success_rate_std']:.3f}" if "success_rate_std" in report else ""
    valid = f", valid format {report['valid_format_rate']:.3f}"
    print(f"{env_name} / {who}: success {report['success_rate']:.3f}{spread}, score {report['mean_score']:.3f}{valid} "
          f"over {len(task_ids)} tasks ({report['seconds']} s)")  # fmt: skip
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=1))
        print(f"report: {output}")
    return report
