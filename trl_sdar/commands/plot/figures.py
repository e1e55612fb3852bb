"""Training curves of one or more runs as PNG figures, read back from the Trainer's `log_history`.

A run directory is a training `output_dir`. Its metrics come from `<run_dir>/log_history.json` (written by our
train command at the end) or `<run_dir>/metrics.jsonl` (appended while training, so it survives a kill), whichever
was written last, or else from the newest `<run_dir>/checkpoint-*/trainer_state.json`. Figures are built on
`matplotlib.figure.Figure` with an Agg canvas (no pyplot, no global backend switch, no display), so plotting is
safe in headless jobs and the figure builders can be inspected in tests before anything is saved.

`sdar/teacher_gap_mean` is the paper's instability detector (METHOD.md §2): near −0.16 at start, about −0.10 for
healthy SDAR, drifting towards −0.21 and noisy when GRPO+OPSD destabilises; the gap panel marks both levels.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from trl_sdar.commands.output_paths import complete_checkpoints
from trl_sdar.method.metrics_log import METRICS_FILE, read_metrics_jsonl

History = list[dict[str, Any]]
Panel = tuple[str, str, str]  # (metric key, panel title, y-axis label)

LOG_HISTORY_FILE = "log_history.json"
_SUCCESS_RE = re.compile(r"^env/([^/]+)/success$")
_SUCCESS_BY_TYPE_RE = re.compile(r"^env/([^/]+)/success/(.+)$")
_NON_TRAINING_PREFIXES = ("eval_", "test_", "train_")  # eval logs and the end-of-training summary
# Faint horizontal reference levels per metric: (y, legend note, colour). Gap levels from METHOD.md §2.
REFERENCE_LINES = {
    "sdar/teacher_gap_mean": ((-0.10, "healthy SDAR ≈ −0.10", "tab:green"), (-0.21, "unstable ≈ −0.21", "tab:red"))
}

GATE_PANELS: list[Panel] = [
    ("sdar/gate_mean", "Mean gate g", "gate"),
    ("sdar/gate_active_ratio", "Active-gate ratio (g > 0.5)", "fraction"),
    ("sdar/teacher_gap_mean", "Teacher–student gap Δ", "mean Δ (nats)"),
]
LOSS_PANELS: list[Panel] = [
    ("loss", "Total loss", "loss"),
    ("sdar/loss", "SDAR distillation loss", "loss"),
    ("kl", "KL to reference", "KL"),
    ("entropy", "Policy entropy", "entropy (nats)"),
]


def _read_raw_history(run_dir: Path) -> tuple[list[Any], Path]:
    """Raw `log_history` list and the file it came from; raises `FileNotFoundError` naming what was looked for."""
    if not run_dir.is_dir():
        raise FileNotFoundError(f"Run directory not found: {run_dir}")
    direct, live = run_dir / LOG_HISTORY_FILE, run_dir / METRICS_FILE
    # The train command writes log_history.json at the end; metrics.jsonl grows while training (and survives a
    # kill): take whichever was written last, so a killed or resumed-then-killed run shows all its steps.
    written = sorted((p.stat().st_mtime_ns, i, p) for i, p in enumerate((direct, live)) if p.is_file())
    if written and written[-1][2] == live:
        return read_metrics_jsonl(live), live
    if written:
        return json.loads(direct.read_text()), direct
    checkpoints = complete_checkpoints(run_dir)
    if not checkpoints:
        raise FileNotFoundError(
            f"No metrics in {run_dir}: looked for {LOG_HISTORY_FILE}, {METRICS_FILE} and "
            "checkpoint-*/trainer_state.json"
        )
    state_file = checkpoints[-1] / "trainer_state.json"  # the newest checkpoint
    return json.loads(state_file.read_text()).get("log_history", []), state_file


def _is_training_entry(entry: Any) -> bool:
    """A per-step training log: has an integer `step` and at least one metric that is not eval/summary."""
    if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
        return False
    metric_keys = [key for key in entry if key not in ("step", "epoch")]
    return bool(metric_keys) and not any(key.startswith(_NON_TRAINING_PREFIXES) for key in metric_keys)


def load_log_history(run_dir: str | Path) -> History:
    """Per-step training log entries of a run, sorted by `step` (eval logs and the final summary dropped).

    Reads `<run_dir>/log_history.json` or `<run_dir>/metrics.jsonl` (the newer of the two), else the `log_history` of
    the newest
    `<run_dir>/checkpoint-N/trainer_state.json`. Raises `FileNotFoundError` when the directory or its metrics are
    missing.
    """
    run_dir = Path(run_dir)
    raw, source = _read_raw_history(run_dir)
    if not isinstance(raw, list):
        raise ValueError(f"{source}: expected a JSON list of log dicts, got {type(raw).__name__}")
    entries = sorted((entry for entry in raw if _is_training_entry(entry)), key=lambda entry: entry["step"])
    if not entries:
        raise FileNotFoundError(f"No per-step training metrics in {source} (run directory {run_dir})")
    return entries


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _series(history: History, key: str) -> tuple[list[int], list[float]]:
    """`(steps, values)` of one metric, skipping entries where it is absent or not a finite number."""
    pairs = [(entry["step"], float(entry[key])) for entry in history if _is_number(entry.get(key))]
    return [step for step, _ in pairs], [value for _, value in pairs]


def _ema(values: list[float], smooth: float) -> list[float]:
    """Exponential moving average `y_t = smooth · y_{t−1} + (1 − smooth) · x_t`; `smooth = 0` returns the raw data."""
    return list(itertools.accumulate(values, lambda previous, value: smooth * previous + (1.0 - smooth) * value))


def _has_key(histories: Sequence[History], key: str) -> bool:
    return any(_series(history, key)[0] for history in histories)


def _matching_keys(histories: Sequence[History], pattern: re.Pattern[str]) -> list[str]:
    """Sorted metric names matching `pattern` that some run logged with a numeric value."""
    keys = {key for history in histories for entry in history for key in entry if pattern.match(key)}
    return [key for key in sorted(keys) if _has_key(histories, key)]


def _color(run_index: int) -> Any:
    return matplotlib.colormaps["tab10"](run_index % 10)


def _new_figure(num_panels: int, title: str | None, panel_width: float = 6.0) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(panel_width * num_panels, 4.0 if title else 4.5), layout="constrained")
    FigureCanvasAgg(fig)  # Agg canvas attached explicitly: no interactive backend is ever selected
    axes = fig.subplots(1, num_panels, squeeze=False)[0]
    if title:
        fig.suptitle(title)
    return fig, list(axes)


def _plot_metric(
    ax: Axes, histories: Sequence[History], labels: Sequence[str], key: str, smooth: float, style="-", suffix=""
) -> None:
    """One line per run that logged `key` (runs without it are skipped)."""
    for index, (history, label) in enumerate(zip(histories, labels)):
        steps, values = _series(history, key)
        if steps:
            ax.plot(steps, _ema(values, smooth), color=_color(index), linestyle=style, label=label + suffix)


def _finish_axis(ax: Axes, title: str, ylabel: str) -> None:
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def _plot_reward(ax: Axes, histories: Sequence[History], labels: Sequence[str], smooth: float) -> None:
    """Mean reward per run, with a ±std band where `reward_std` is logged at the same steps."""
    _plot_metric(ax, histories, labels, "reward", smooth)
    for index, history in enumerate(histories):
        steps, mean = _series(history, "reward")
        std_steps, std = _series(history, "reward_std")
        if steps and std_steps == steps:
            mean, std = _ema(mean, smooth), _ema(std, smooth)
            lower, upper = [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)]
            ax.fill_between(steps, lower, upper, color=_color(index), alpha=0.15, linewidth=0)


def _reward_figure(histories: Sequence[History], labels: Sequence[str], smooth: float = 0.0) -> Figure | None:
    """Reward (±std) and every `env/<name>/success` curve; `None` when no run logged any of them."""
    success_keys = _matching_keys(histories, _SUCCESS_RE)
    has_reward = _has_key(histories, "reward")
    if not has_reward and not success_keys:
        return None
    fig, axes = _new_figure(int(has_reward) + int(bool(success_keys)), "Reward and success")
    if has_reward:
        _plot_reward(axes[0], histories, labels, smooth)
        _finish_axis(axes[0], "Reward (mean, ± std band where logged)", "reward")
    for env_index, key in enumerate(success_keys):  # one line style per environment, one colour per run
        suffix = "" if len(success_keys) == 1 else f" · {_SUCCESS_RE.match(key).group(1)}"
        _plot_metric(axes[-1], histories, labels, key, smooth, ["-", "--", ":", "-."][env_index % 4], suffix)
    if success_keys:
        title = "Episode success rate" + (f" ({success_keys[0]})" if len(success_keys) == 1 else "")
        _finish_axis(axes[-1], title, "success")
    return fig


def _panels_figure(
    histories: Sequence[History], labels: Sequence[str], panels: list[Panel], title: str, smooth: float
) -> Figure | None:
    """One panel per metric in `panels` that some run logged (with its reference lines); `None` if none logged."""
    present = [panel for panel in panels if _has_key(histories, panel[0])]
    if not present:
        return None
    fig, axes = _new_figure(len(present), title)
    for ax, (key, panel_title, ylabel) in zip(axes, present):
        _plot_metric(ax, histories, labels, key, smooth)
        for level, note, color in REFERENCE_LINES.get(key, ()):
            ax.axhline(level, color=color, linestyle="--", linewidth=1.0, alpha=0.4, label=note)
        _finish_axis(ax, f"{panel_title} ({key})", ylabel)
    return fig


def _gate_figure(histories: Sequence[History], labels: Sequence[str], smooth: float = 0.0) -> Figure | None:
    """`sdar/gate_mean`, `sdar/gate_active_ratio` and `sdar/teacher_gap_mean` (with the gap's reference levels)."""
    return _panels_figure(histories, labels, GATE_PANELS, "SDAR gate diagnostics", smooth)


def _losses_figure(histories: Sequence[History], labels: Sequence[str], smooth: float = 0.0) -> Figure | None:
    """`loss`, `sdar/loss`, `kl` and `entropy`, one panel for each that some run logged."""
    return _panels_figure(histories, labels, LOSS_PANELS, "Losses", smooth)


def _success_by_type_figure(histories: Sequence[History], labels: Sequence[str]) -> Figure | None:
    """Grouped bars of the last logged `env/<name>/success/<type>` per run; `None` when no run logged one."""
    keys = _matching_keys(histories, _SUCCESS_BY_TYPE_RE)
    if not keys:
        return None
    parsed = [_SUCCESS_BY_TYPE_RE.match(key).groups() for key in keys]  # (env, task type)
    single_env = len({env for env, _ in parsed}) == 1
    categories = [task if single_env else f"{env}/{task}" for env, task in parsed]
    fig, (ax,) = _new_figure(1, None, panel_width=max(6.0, 0.5 * len(keys) * len(histories) + 2.0))
    width = 0.8 / len(histories)
    for index, (history, label) in enumerate(zip(histories, labels)):
        xs, heights = [], []
        for position, key in enumerate(keys):
            values = _series(history, key)[1]
            if values:
                xs.append(position - 0.4 + width * (index + 0.5))
                heights.append(values[-1])
        if xs:
            ax.bar(xs, heights, width=width, color=_color(index), label=label)
    ax.set_xticks(range(len(keys)), categories, rotation=30, ha="right")
    title = "Success per task type, last logged value" + (f" ({parsed[0][0]})" if single_env else "")
    ax.set(title=title, xlabel="task type", ylabel="success", ylim=(0.0, 1.05))
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize="small")
    return fig


def build_figures(
    run_dirs: Sequence[str | Path], labels: Sequence[str] | None = None, smooth: float = 0.0
) -> dict[str, Figure]:
    """The figures `plot_runs` saves, keyed by file name, without writing anything (e.g. for notebooks).

    Figures whose metrics no run logged are left out. See `plot_runs` for the arguments.
    """
    if not run_dirs:
        raise ValueError("at least one run directory is needed")
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth must be in [0, 1), got {smooth}")
    paths = [Path(run_dir) for run_dir in run_dirs]
    if labels is None:
        labels = [path.resolve().name for path in paths]
    elif len(labels) != len(paths):
        raise ValueError(f"got {len(labels)} labels for {len(paths)} run directories")
    histories = [load_log_history(path) for path in paths]
    figures = {
        "reward.png": _reward_figure(histories, labels, smooth),
        "sdar_gate.png": _gate_figure(histories, labels, smooth),
        "losses.png": _losses_figure(histories, labels, smooth),
        "success_by_type.png": _success_by_type_figure(histories, labels),
    }
    return {name: fig for name, fig in figures.items() if fig is not None}


def plot_runs(
    run_dirs: Sequence[str | Path], output_dir: str | Path, labels: Sequence[str] | None = None, smooth: float = 0.0
) -> list[Path]:
    """Write `reward.png`, `sdar_gate.png`, `losses.png` and `success_by_type.png` for the runs, overlaid.

    One colour per run; `labels` default to the run directory names. A figure is skipped (and not returned) when
    no run logged any of its metrics. `smooth` in [0, 1) applies an EMA to the curves (0 = raw data).
    Returns the paths written, in the order above.
    """
    figures = build_figures(run_dirs, labels, smooth)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, fig in figures.items():
        fig.savefig(output_dir / name, dpi=120)
    return [output_dir / name for name in figures]


def mean_success(history: History) -> tuple[list[int], list[float]]:
    """Per-step success averaged over the environments logged at that step (usually exactly one)."""
    steps, values = [], []
    for entry in history:
        rates = [float(value) for key, value in entry.items() if _SUCCESS_RE.match(key) and _is_number(value)]
        if rates:
            steps.append(entry["step"])
            values.append(sum(rates) / len(rates))
    return steps, values


def summarize_run(run_dir: str | Path) -> dict[str, Any]:
    """Final and best reward and success, and the last `sdar/teacher_gap_mean` of a run (`None` where not logged).

    Success is `env/<name>/success`, averaged over environments when a step logs several.
    """
    history = load_log_history(run_dir)
    rewards = _series(history, "reward")[1]
    successes = mean_success(history)[1]
    gaps = _series(history, "sdar/teacher_gap_mean")[1]
    return {
        "run_dir": str(run_dir),
        "last_step": history[-1]["step"],
        "final_reward": rewards[-1] if rewards else None,
        "best_reward": max(rewards) if rewards else None,
        "final_success": successes[-1] if successes else None,
        "best_success": max(successes) if successes else None,
        "last_teacher_gap": gaps[-1] if gaps else None,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """One-line rendering of `summarize_run`'s result, e.g. for the CLI."""
    values = ("final_reward", "best_reward", "final_success", "best_success", "last_teacher_gap")
    fmt = {key: "n/a" if summary[key] is None else f"{summary[key]:.3f}" for key in values}
    return (
        f"{Path(summary['run_dir']).name}: step {summary['last_step']} | "
        f"reward {fmt['final_reward']} (best {fmt['best_reward']}) | "
        f"success {fmt['final_success']} (best {fmt['best_success']}) | teacher gap {fmt['last_teacher_gap']}"
    )


# ---- several methods, each over several seeds: mean curve and a min–max band (trl-sdar compare) ----
METHOD_PANELS: list[Panel] = [
    ("reward", "Reward", "reward"),
    ("success", "Episode success rate (env/*/success)", "success"),
    ("sdar/teacher_gap_mean", "Teacher–student gap Δ", "mean Δ (nats)"),
    ("sdar/gate_mean", "Mean gate g", "gate"),
]


def _seed_band(histories: Sequence[History], key: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """(steps, mean, min, max) over the seeds that logged `key` at each step (`success`: mean env success)."""
    by_step: dict[int, list[float]] = {}
    for history in histories:
        steps, values = mean_success(history) if key == "success" else _series(history, key)
        for step, value in zip(steps, values):
            by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    return (steps, [sum(by_step[s]) / len(by_step[s]) for s in steps], [min(by_step[s]) for s in steps],
            [max(by_step[s]) for s in steps])  # fmt: skip


def build_method_figures(groups: dict[str, Sequence[str | Path]], smooth: float = 0.0) -> dict[str, Figure]:
    """`methods_training.png`: reward, success, teacher gap and gate per method (label → its seeds' run dirs), the
    mean over seeds as a line and their min–max as a band; panels no method logged are left out."""
    if not groups or not all(groups.values()):
        raise ValueError("every method needs at least one run directory")
    histories = {label: [load_log_history(run) for run in runs] for label, runs in groups.items()}
    present = [p for p in METHOD_PANELS if any(_seed_band(h, p[0])[0] for h in histories.values())]
    if not present:
        return {}
    fig, axes = _new_figure(len(present), "Methods: mean over seeds, band = min–max over seeds", panel_width=5.0)
    for ax, (key, title, ylabel) in zip(axes, present):
        for index, (label, runs) in enumerate(histories.items()):
            steps, mean, low, high = _seed_band(runs, key)
            if steps:
                ax.plot(steps, _ema(mean, smooth), color=_color(index), label=f"{label} (n={len(runs)})")
                ax.fill_between(steps, _ema(low, smooth), _ema(high, smooth), color=_color(index), alpha=0.15,
                                linewidth=0)  # fmt: skip
        for level, note, color in REFERENCE_LINES.get(key, ()):
            ax.axhline(level, color=color, linestyle="--", linewidth=1.0, alpha=0.4, label=note)
        _finish_axis(ax, title, ylabel)
    return {"methods_training.png": fig}


def method_eval_figure(before: dict[str, float], after: dict[str, Sequence[float]]) -> Figure:
    """Evaluation success per method: the starting model's (hollow bar) and each seed's trained model (dots) with
    their mean (filled bar)."""
    fig, (ax,) = _new_figure(1, None, panel_width=max(7.0, 1.2 * len(after) + 2.0))
    for index, (method, values) in enumerate(after.items()):
        color = _color(index)
        ax.bar(index - 0.2, before[method], width=0.4, facecolor="none", edgecolor=color, label=None)
        ax.bar(index + 0.2, sum(values) / len(values), width=0.4, color=color, alpha=0.6)
        ax.scatter([index + 0.2] * len(values), values, color="black", s=12, zorder=3)
    ax.set_xticks(range(len(after)), list(after), rotation=20, ha="right")
    ax.set(title="Eval success: start (hollow) → trained (mean bar, seed dots)", ylabel="success", ylim=(0.0, 1.05))
    ax.grid(alpha=0.3, axis="y")
    return fig
