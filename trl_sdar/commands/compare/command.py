"""`trl-sdar compare`: the command's options and its one-line errors (the work is in this package's other modules)."""

from __future__ import annotations

import argparse
from pathlib import Path

from trl_sdar.commands.argtypes import smoothing
from trl_sdar.commands.errors import one_line_errors

HELP = "methods × seeds from one starting model, evaluated on a pinned manifest"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `trl-sdar compare`."""
    p.add_argument("spec", type=Path, help="comparison spec (YAML), e.g. recipes/compare/quickstart_cpu.yaml")
    p.add_argument("--output-dir", type=Path, default=None, help="replaces the spec's output_dir")
    p.add_argument("--dry-run", action="store_true", help="print the runs and the evaluation; run nothing")
    p.add_argument("--methods", type=_names, default=None,
                   help="only these methods (comma-separated); processes given disjoint methods can share one "
                   "output_dir, and a last run with --summary-only summarises them all")  # fmt: skip
    p.add_argument("--seeds", type=_seeds, default=None,
                   help="only these of the spec's seeds (comma-separated), e.g. 2 or 0,1: two processes can share one "
                   "method's seeds")  # fmt: skip
    p.add_argument("--summary-only", action="store_true",
                   help="train and evaluate nothing: summarise the runs already trained and evaluated, and list the "
                   "others as missing")  # fmt: skip
    p.add_argument("--smooth", type=smoothing, default=0.0, help="EMA smoothing of the plotted curves")


def _names(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r} names no method; expected e.g. grpo,sdar")
    return names


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(seed) for seed in text.split(",") if seed.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of integer seeds; expected e.g. 0,2") from None
    if not seeds:
        raise argparse.ArgumentTypeError(f"{text!r} names no seed; expected e.g. 0,2")
    return seeds


def run_compare(args: argparse.Namespace) -> dict | None:
    from trl_sdar.commands.compare.run import dry_run
    from trl_sdar.commands.compare.run import run_compare as compare
    from trl_sdar.commands.compare.runner import CompareRunError
    from trl_sdar.commands.compare.spec import load_spec, only_methods, only_seeds

    with one_line_errors("compare", CompareRunError):
        spec = load_spec(args.spec, args.output_dir)
        if args.methods is not None:
            spec = only_methods(spec, args.methods)
        if args.seeds is not None:
            spec = only_seeds(spec, args.seeds)
        if args.dry_run:
            print("\n".join(dry_run(spec)))
            return None
        return compare(spec, smooth=args.smooth, summary_only=args.summary_only)
