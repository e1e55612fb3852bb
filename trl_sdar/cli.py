"""`trl-sdar` console script (also `python -m trl_sdar.cli`, e.g. under `accelerate launch -m`): parses the command
line and dispatches to the command's module in `trl_sdar.commands`. Nothing imports this module.

`train` and `sft` parse a TRL recipe themselves (YAML `--config` plus overrides); `eval`, `plot` and `compare` are
argparse sub-commands whose options each command module defines (`HELP`, `add_arguments`).
"""

from __future__ import annotations

import sys

from trl_sdar.commands.argtypes import OneLineParser
from trl_sdar.commands.compare import command as compare
from trl_sdar.commands.evaluate import args as evaluate_args
from trl_sdar.commands.evaluate import run as evaluate
from trl_sdar.commands.plot import command as plot

RECIPE_COMMANDS = {
    "train": "train from a YAML recipe (--config) with overrides",
    "sft": "warm start: SFT on expert demonstrations (--config recipe, overrides)",
}


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="trl-sdar", description="SDAR training and evaluation for TRL.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for name, help_text in RECIPE_COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    for name, options, run in (
        ("eval", evaluate_args, evaluate.run_eval),
        ("plot", plot, plot.run_plot),
        ("compare", compare, compare.run_compare),
    ):
        command = sub.add_parser(name, help=options.HELP)
        options.add_arguments(command)
        command.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> None:
    """The `trl-sdar` command. Returns None: the console script exits with status 0 unless a command raises
    (`SystemExit` with its one-line error); what a command computes goes to its files and its output."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        from trl_sdar.commands.train import main as train

        train(argv[1:])
    elif argv[:1] == ["sft"]:
        from trl_sdar.commands.sft.run import main as sft

        sft(argv[1:])
    else:
        args = build_parser().parse_args(argv)
        args.run(args)


if __name__ == "__main__":
    main()
