"""`trl-sdar` console script (also `python -m trl_sdar.cli`, e.g. under `accelerate launch -m`): train|eval|plot."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .envs import ENV_CLASSES
from .script_args import DIFFICULTIES


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad value as one line (`trl-sdar eval: error: …`), without the usage block."""

    def error(self, message: str):
        raise SystemExit(f"{self.prog}: error: {message}")


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is not valid; expected an integer >= {low}")
        return value

    return parse


_POSITIVE, _NON_NEGATIVE = _int_at_least(1), _int_at_least(0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} is not valid; expected a number > 0")
    return value


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; expected comma-separated integers") from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r} repeats a seed; expected distinct integers")
    return seeds


def _name_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; expected distinct comma-separated names")
    return names


def _smoothing(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not valid; expected 0 <= smooth < 1")
    return value


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a model checkpoint or a scripted policy over a pinned task list")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", help="model folder or LoRA adapter checkpoint to evaluate")
    who.add_argument("--policy", choices=["expert", "random"], help="scripted baseline policy")
    p.add_argument("--env", choices=sorted(ENV_CLASSES), help="environment (or take it from --manifest)")
    p.add_argument(
        "--manifest", help="pinned task list: a JSON file or a shipped name (e.g. alfworld_builtin_eval128)"
    )
    p.add_argument("--num-tasks", type=_POSITIVE, default=None,
                   help="task ids start..start+N-1 (default 20); with --manifest: its first N tasks (with "
                        "--task-types: its first N tasks of those types)")  # fmt: skip
    p.add_argument(
        "--task-types",
        type=_name_list,
        default=None,
        help="comma-separated task types: evaluate only those tasks (e.g. pick_and_place_simple)",
    )
    p.add_argument("--task-start", type=_NON_NEGATIVE, default=0, help="without a manifest: first task id (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random policy (default 0)")
    p.add_argument("--transcripts", type=_NON_NEGATIVE, default=0,
                   help="model: keep the turns of the first N episodes (first seed) in the report")  # fmt: skip
    p.add_argument("--seeds", type=_seed_list, default=[0], help="model: comma-separated sampling seeds (avg@k)")
    p.add_argument("--temperature", type=_positive_float, default=0.4, help="model sampling temperature (paper: 0.4)")
    p.add_argument("--max-turns", type=_POSITIVE, default=None, help="turn limit (default: the benchmark's)")
    p.add_argument("--max-turn-tokens", type=_POSITIVE, default=512, help="model: new tokens per turn")
    p.add_argument("--max-episode-tokens", type=_POSITIVE, default=8192, help="model, episode unit: token budget")
    p.add_argument(
        "--rollout-unit",
        choices=["turn", "episode"],
        default="turn",
        help="model: turn (the paper's step prompts, default) or episode (one growing transcript)",
    )
    p.add_argument(
        "--history-window",
        type=_NON_NEGATIVE,
        default=2,
        help="model, turn unit: past (observation, action) pairs per prompt (paper: 2; Search-QA 4)",
    )
    p.add_argument("--parser", choices=["reference", "strict"], default="reference", help="how turns are read")
    p.add_argument("--batch-size", type=_POSITIVE, default=16, help="model: episodes generated together")
    p.add_argument("--student-skills", action="store_true", help="Skill-GRPO models: show skills in the prompt")
    p.add_argument("--env-source", choices=["builtin", "real"], default="builtin")
    p.add_argument("--env-data-dir", default=None, help="real benchmark data (see README)")
    p.add_argument("--env-difficulty", choices=DIFFICULTIES, default="default", help="built-in ALFWorld")
    p.add_argument("--workers", type=_POSITIVE, default=4, help="scripted policy: concurrent episodes")
    p.add_argument("--output", type=Path, default=None, help="write the JSON report here")
    p.set_defaults(func=run_eval)


def load_manifest(name_or_path: str) -> dict:
    """A task manifest from a JSON path or a shipped name (trl_sdar/manifests/<name>.json)."""
    path = Path(name_or_path)
    if not path.exists():
        path = Path(__file__).parent / "manifests" / f"{name_or_path}.json"
    if not path.exists():
        shipped = sorted(p.stem for p in (Path(__file__).parent / "manifests").glob("*.json"))
        raise ValueError(f"--manifest {name_or_path!r} is neither a file nor one of {shipped}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"manifest {path} is not valid JSON ({error})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"manifest {path} must be a JSON object with 'env_name' and 'task_ids'")
    missing = {"env_name", "task_ids"} - manifest.keys()
    if missing:
        raise ValueError(f"manifest {path} lacks {sorted(missing)}")
    ids = manifest["task_ids"]
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and i >= 0 for i in ids):
        raise ValueError(f"manifest {path}: 'task_ids' must be a non-empty list of integers >= 0")
    return manifest


def _eval_setup(args: argparse.Namespace):
    from .envs import make_env
    from .train import env_kwargs

    manifest = load_manifest(args.manifest) if args.manifest else None
    env_name = manifest["env_name"] if manifest else args.env
    if env_name is None:
        raise ValueError("give --env or --manifest")
    if manifest and manifest["env_name"] not in ENV_CLASSES:
        raise ValueError(f"manifest env_name={manifest['env_name']!r} is not one of {sorted(ENV_CLASSES)}")
    if manifest:
        task_ids = list(manifest["task_ids"])
    else:
        task_ids = list(range(args.task_start, args.task_start + (args.num_tasks or 20)))
    kwargs = env_kwargs(env_name, source=args.env_source, data_dir=args.env_data_dir, difficulty=args.env_difficulty,
                        max_task_id=max(task_ids))  # fmt: skip
    kwargs.update((manifest or {}).get("env_kwargs", {}))
    if args.task_types:
        from .envs.selection import select_task_types

        env = make_env(env_name, **kwargs)
        try:
            task_ids = select_task_types(env, task_ids, args.task_types, field="--task-types")
        finally:
            env.close()
    if manifest and args.num_tasks is not None:
        if args.num_tasks > len(task_ids):
            of_types = f" of types {args.task_types}" if args.task_types else ""
            raise ValueError(f"--num-tasks={args.num_tasks} is more than the {len(task_ids)} tasks{of_types} of "
                             f"the manifest {args.manifest!r}.")  # fmt: skip
        task_ids = task_ids[: args.num_tasks]
    return env_name, task_ids, lambda: make_env(env_name, **kwargs)


def run_eval(args: argparse.Namespace) -> dict:
    from .train import RecipeError

    try:
        return _run_eval(args)
    except (RecipeError, ValueError, FileNotFoundError) as error:
        raise SystemExit(f"trl-sdar eval: error: {' '.join(str(error).split())}") from error


def _run_eval(args: argparse.Namespace) -> dict:
    from .evaluation import evaluate_model, evaluate_policy, load_policy, summarize

    env_name, task_ids, factory = _eval_setup(args)
    start, who = time.perf_counter(), args.model or args.policy

    def progress(done: int, total: int) -> None:
        print(f"\r[eval] {env_name} {who}: {done}/{total} episodes", end="", file=sys.stderr, flush=True)

    if args.model:
        from .train import resolve_model_path

        model, tokenizer = load_policy(resolve_model_path(args.model))
        skills = None
        if args.student_skills:
            from .skills import SkillSelector

            skills = SkillSelector.builtin(env_name)
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
    report["manifest"] = args.manifest
    report["task_types"] = args.task_types
    report["seconds"] = round(time.perf_counter() - start, 2)
    spread = f" ± {report['success_rate_std']:.3f}" if "success_rate_std" in report else ""
    valid = f", valid format {report['valid_format_rate']:.3f}"
    print(f"{env_name} / {who}: success {report['success_rate']:.3f}{spread}, score {report['mean_score']:.3f}{valid} "
          f"over {len(task_ids)} tasks ({report['seconds']} s)")  # fmt: skip
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1))
        print(f"report: {args.output}")
    return report


def _add_plot(sub) -> None:
    p = sub.add_parser("plot", help="PNG figures of one run, or several runs overlaid")
    p.add_argument("run_dirs", nargs="+", type=Path, help="training output_dir(s)")
    p.add_argument("--labels", default=None, help="comma-separated legend labels (default: folder names)")
    p.add_argument("--output-dir", type=Path, default=None, help="default: <first run>/plots")
    p.add_argument("--smooth", type=_smoothing, default=0.0, help="EMA smoothing in [0, 1) (default 0: raw)")
    p.set_defaults(func=run_plot)


def run_plot(args: argparse.Namespace) -> list[Path]:
    from .plotting import format_summary, plot_runs, summarize_run

    labels = args.labels.split(",") if args.labels else None
    output = args.output_dir or args.run_dirs[0] / "plots"
    try:
        paths = plot_runs(args.run_dirs, output, labels=labels, smooth=args.smooth)
        summaries = [summarize_run(run) for run in args.run_dirs]
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"trl-sdar plot: error: {error}") from error
    for summary in summaries:
        print(format_summary(summary))
    for path in paths:
        print(f"figure: {path}")
    return paths


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="methods × seeds from one starting model, evaluated on a pinned manifest")
    p.add_argument("spec", type=Path, help="comparison spec (YAML), e.g. recipes/compare/quickstart_cpu.yaml")
    p.add_argument("--output-dir", type=Path, default=None, help="replaces the spec's output_dir")
    p.add_argument("--dry-run", action="store_true", help="print the runs and the evaluation; run nothing")
    p.add_argument("--smooth", type=_smoothing, default=0.0, help="EMA smoothing of the plotted curves")
    p.set_defaults(func=run_compare)


def run_compare(args: argparse.Namespace) -> dict | None:
    from .compare import CompareRunError, CompareSpecError, dry_run, load_spec
    from .compare import run_compare as compare

    try:
        spec = load_spec(args.spec, args.output_dir)
        if args.dry_run:
            print("\n".join(dry_run(spec)))
            return None
        return compare(spec, smooth=args.smooth)
    except (CompareSpecError, CompareRunError, ValueError, FileNotFoundError) as error:
        raise SystemExit(f"trl-sdar compare: error: {' '.join(str(error).split())}") from error


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
        raise SystemExit(f"trl-sdar train: error: {' '.join(str(error).split())}") from error


def run_sft(argv: list[str]) -> None:
    """`trl-sdar sft`: expert demonstrations → supervised warm start (trl_sdar/sft)."""
    from .sft import parse_sft_args
    from .sft import run_sft as sft
    from .train import RecipeError

    try:
        sft(*parse_sft_args(argv))
    except (RecipeError, ValueError, FileNotFoundError) as error:
        raise SystemExit(f"trl-sdar sft: error: {' '.join(str(error).split())}") from error


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="trl-sdar", description="SDAR training and evaluation for TRL.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    sub.add_parser("train", help="train from a YAML recipe (--config) with overrides", add_help=False)
    sub.add_parser("sft", help="warm start: SFT on expert demonstrations (--config recipe, overrides)", add_help=False)
    _add_eval(sub)
    _add_plot(sub)
    _add_compare(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        run_train(argv[1:])
        return
    if argv[:1] == ["sft"]:
        run_sft(argv[1:])
        return
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
