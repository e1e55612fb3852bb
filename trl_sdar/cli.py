"""`trl-sdar` console script (also `python -m trl_sdar.cli`, e.g. under `accelerate launch -m`): train|eval|plot."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .envs import ENV_CLASSES


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a policy on a built-in environment over a pinned task list")
    p.add_argument("--env", required=True, choices=sorted(ENV_CLASSES))
    p.add_argument("--policy", required=True, choices=["expert", "random"])
    p.add_argument("--num-tasks", type=int, default=20, help="evaluate task ids start..start+N-1 (default 20)")
    p.add_argument("--task-start", type=int, default=0, help="first task id (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the policy's sampling (default 0)")
    p.add_argument("--max-turns", type=int, default=None, help="turn limit (default: the benchmark's)")
    p.add_argument("--workers", type=int, default=4, help="concurrent episodes (default 4)")
    p.add_argument("--output", type=Path, default=None, help="write the JSON report here")
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> dict:
    from .envs import make_env
    from .evaluation import evaluate_policy, summarize

    if args.num_tasks < 1:
        raise SystemExit(f"error: --num-tasks must be >= 1, got {args.num_tasks}")
    task_ids = list(range(args.task_start, args.task_start + args.num_tasks))
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        print(f"\r[eval] {args.env} {args.policy}: {done}/{total} episodes", end="", file=sys.stderr, flush=True)

    results = evaluate_policy(
        lambda: make_env(args.env), task_ids, args.policy, seed=args.seed, max_turns=args.max_turns,
        num_workers=args.workers, progress=progress,
    )  # fmt: skip
    print(file=sys.stderr)
    report = {"env": args.env, "policy": args.policy, "seed": args.seed, "task_ids": task_ids, **summarize(results)}
    report["seconds"] = round(time.perf_counter() - start, 2)
    print(f"{args.env} / {args.policy}: success {report['success_rate']:.3f}, score {report['mean_score']:.3f} "
          f"over {len(task_ids)} tasks ({report['seconds']} s)")  # fmt: skip
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1))
        print(f"report: {args.output}")
    return report


def run_train(argv: list[str]) -> None:
    """Parse the recipe; train here, or hand off to `accelerate launch` when the recipe asks for it."""
    import os

    from .launch import LAUNCHED_ENV, launch_with_accelerate, parse_train_args
    from .train import RecipeError, run_training

    try:
        script, training, model, launch_args, cli_launch_args = parse_train_args(argv)
        if launch_args and os.environ.get(LAUNCHED_ENV) != "1":
            launch_with_accelerate(argv, launch_args, cli_launch_args)
            return
        run_training(script, training, model)
    except (RecipeError, ValueError, FileNotFoundError) as error:
        raise SystemExit(f"trl-sdar train: error: {_one_line(error)}") from error


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if "--bf16" in text and "GPU" in text or "bf16" in text and "not supported" in text:
        return f"{text} Fix: set bf16: false and use_cpu: true on a machine without a GPU."
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trl-sdar", description="SDAR training and evaluation for TRL.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="train from a YAML recipe (--config) with overrides", add_help=False)
    _add_eval(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        run_train(argv[1:])
        return
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
