"""`trl-sdar plot`: PNG figures of one training run, or several overlaid, and a one-line summary of each."""

from __future__ import annotations

import argparse
from pathlib import Path

from trl_sdar.commands.argtypes import smoothing
from trl_sdar.commands.errors import one_line_errors
from trl_sdar.commands.output_paths import check_output_folder

HELP = "PNG figures of one run, or several runs overlaid"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `trl-sdar plot`."""
    p.add_argument("run_dirs", nargs="+", type=Path, help="training output_dir(s)")
    p.add_argument("--labels", default=None, help="comma-separated legend labels (default: folder names)")
    p.add_argument("--output-dir", type=Path, default=None, help="default: <first run>/plots")
    p.add_argument("--smooth", type=smoothing, default=0.0, help="EMA smoothing in [0, 1) (default 0: raw)")


def run_plot(args: argparse.Namespace) -> list[Path]:
    from trl_sdar.commands.plot.figures import format_summary, plot_runs, summarize_run

    labels = args.labels.split(",") if args.labels else None
    output = args.output_dir or args.run_dirs[0] / "plots"
    with one_line_errors("plot"):
        check_output_folder(output, "--output-dir")
        paths = plot_runs(args.run_dirs, output, labels=labels, smooth=args.smooth)
        summaries = [summarize_run(run) for run in args.run_dirs]
    for summary in summaries:
        print(format_summary(summary))
    for path in paths:
        print(f"figure: {path}")
    return paths
