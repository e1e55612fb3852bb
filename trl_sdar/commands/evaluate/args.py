"""The options of `trl-sdar eval`."""

from __future__ import annotations

import argparse
from pathlib import Path

from trl_sdar.commands.argtypes import NON_NEGATIVE, POSITIVE, OneLineParser, name_list, non_negative_float, seed_list
from trl_sdar.commands.recipe.args import DIFFICULTIES, SKILL_MODES, parse_env_options
from trl_sdar.envs import ENV_CLASSES

HELP = "evaluate a model checkpoint or a scripted policy over a pinned task list"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `trl-sdar eval`."""
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", help="model folder or LoRA adapter checkpoint to evaluate")
    who.add_argument("--policy", choices=["expert", "random"], help="scripted baseline policy")
    p.add_argument("--env", choices=sorted(ENV_CLASSES), help="environment (or take it from --manifest)")
    p.add_argument(
        "--manifest", help="pinned task list: a JSON file or a shipped name (e.g. alfworld_builtin_eval128)"
    )
    p.add_argument("--num-tasks", type=POSITIVE, default=None,
                   help="task ids start..start+N-1 (default 20); with --manifest: its first N tasks (with "
                        "--task-types: its first N tasks of those types)")  # fmt: skip
    p.add_argument(
        "--task-types",
        type=name_list,
        default=None,
        help="comma-separated task types: evaluate only those tasks (e.g. pick_and_place_simple)",
    )
    p.add_argument("--task-start", type=NON_NEGATIVE, default=0, help="without a manifest: first task id (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random policy (default 0)")
    p.add_argument("--transcripts", type=NON_NEGATIVE, default=0,
                   help="model: keep the turns of the first N episodes (first seed) in the report")  # fmt: skip
    p.add_argument("--seeds", type=seed_list, default=[0], help="model: comma-separated sampling seeds (avg@k)")
    p.add_argument(
        "--temperature",
        type=non_negative_float,
        default=0.4,
        help="model sampling temperature (paper: 0.4; 0: greedy, the reference's Search-QA evaluation)",
    )
    p.add_argument("--max-turns", type=POSITIVE, default=None, help="turn limit (default: the benchmark's)")
    p.add_argument("--max-turn-tokens", type=POSITIVE, default=512, help="model: new tokens per turn")
    p.add_argument("--max-episode-tokens", type=POSITIVE, default=8192, help="model, episode unit: token budget")
    p.add_argument(
        "--rollout-unit",
        choices=["turn", "episode"],
        default="turn",
        help="model: turn (the paper's step prompts, default) or episode (one growing transcript)",
    )
    p.add_argument(
        "--history-window",
        type=NON_NEGATIVE,
        default=None,
        help="model, turn unit: past (observation, action) pairs per prompt (default: the paper's, 2; Search-QA 4)",
    )
    p.add_argument("--parser", choices=["reference", "strict"], default="reference", help="how turns are read")
    p.add_argument("--batch-size", type=POSITIVE, default=16, help="model: episodes generated together")
    p.add_argument("--student-skills", action="store_true", help="Skill-GRPO models: show skills in the prompt")
    p.add_argument(
        "--skills",
        choices=[m for m in SKILL_MODES if m != "none"],
        default="rules",
        help="with --student-skills: how they are selected (task: the task's own context, e.g. doors)",
    )
    p.add_argument(
        "--env-options",
        type=_env_options,
        default=None,
        help="more environment arguments as JSON, as a recipe's env_options (e.g. '{\"rooms\": 1}')",
    )
    p.add_argument("--env-source", choices=["builtin", "real"], default="builtin")
    p.add_argument("--env-data-dir", default=None, help="real benchmark data (see README)")
    p.add_argument(
        "--questions-path",
        default=None,
        help="Search-QA: a question file (Search-R1's or SDAR's parquet, JSONL); without --num-tasks or "
        "--manifest every question of it is evaluated, reported per data source",
    )
    p.add_argument("--retriever-url", default=None, help="Search-QA: the retrieval server (e.g. SDAR's, on loopback)")
    p.add_argument("--env-difficulty", choices=DIFFICULTIES, default="default", help="built-in ALFWorld")
    p.add_argument("--workers", type=POSITIVE, default=4, help="scripted policy: concurrent episodes")
    p.add_argument("--output", type=Path, default=None, help="write the JSON report here")


def _env_options(text: str) -> dict:
    try:
        return parse_env_options(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_eval_args(argv: list[str]) -> argparse.Namespace:
    """`trl-sdar eval` arguments (without the word `eval`) as the command parses them."""
    parser = OneLineParser(prog="trl-sdar eval", description=HELP)
    add_arguments(parser)
    return parser.parse_args(argv)
