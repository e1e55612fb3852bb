import json
import math
from pathlib import Path

import pytest

from trl_sdar.commands.plot.figures import (
    _gate_figure,
    _losses_figure,
    _reward_figure,
    _success_by_type_figure,
    build_figures,
    format_summary,
    load_log_history,
    plot_runs,
    summarize_run,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SUMMARY_ENTRY = {"train_runtime": 12.3, "train_loss": 0.1, "total_flos": 0.0, "step": 3, "epoch": 1.0}


def _sdar_history(num_steps: int = 3, reward_offset: float = 0.0) -> list[dict]:
    """Synthetic SDAR log: reward 0.2, 0.5, 0.4 (+ offset), gap drifting from −0.16 towards −0.10."""
    rewards = [0.2, 0.5, 0.4, 0.6, 0.3][:num_steps]
    entries = []
    for step, reward in enumerate(rewards, start=1):
        entries.append(
            {
                "step": step,
                "epoch": step / num_steps,
                "loss": 0.5 / step,
                "reward": reward + reward_offset,
                "reward_std": 0.1,
                "kl": 0.01 * step,
                "entropy": 1.0 - 0.1 * step,
                "sdar/gate_mean": 0.3,
                "sdar/gate_active_ratio": 0.25,
                "sdar/teacher_gap_mean": -0.16 + 0.03 * (step - 1),
                "sdar/loss": 0.02,
                "env/alfworld/success": reward / 2,
                "env/alfworld/success/pick": 0.1 * step,
                "env/alfworld/success/clean": 0.2 * step,
            }
        )
    return entries


def _write_run(run_dir: Path, history: list[dict]) -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "log_history.json").write_text(json.dumps(history))
    return run_dir


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 5_000  # a rendered chart, not an empty canvas


def _data_lines(ax) -> list:
    """Curves drawn from run data (reference lines carry a 'healthy'/'unstable' label)."""
    return [line for line in ax.get_lines() if "≈" not in line.get_label()]


def test_loader_filters_non_step_entries_and_sorts(tmp_path):
    history = _sdar_history()
    shuffled = [history[2], SUMMARY_ENTRY, history[0], {"eval_loss": 0.3, "step": 2}, "junk", history[1]]
    run = _write_run(tmp_path / "run", shuffled)
    loaded = load_log_history(run)
    assert [entry["step"] for entry in loaded] == [1, 2, 3]
    assert all("train_runtime" not in entry and "eval_loss" not in entry for entry in loaded)


def test_loader_uses_newest_checkpoint(tmp_path):
    run = tmp_path / "run"
    # checkpoint-10 sorts before checkpoint-9 as a string: the loader must compare step numbers.
    for step, history in ((9, _sdar_history(2)), (10, _sdar_history(4)), (100, None)):
        ckpt = run / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        if history is not None:
            (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": history}))
    (run / "checkpoint-100" / "optimizer.pt").write_bytes(b"")  # in progress: no trainer_state.json yet
    (run / "checkpoint-latest").mkdir()
    assert [entry["step"] for entry in load_log_history(run)] == [1, 2, 3, 4]


def test_log_history_json_takes_precedence_over_checkpoints(tmp_path):
    run = _write_run(tmp_path / "run", _sdar_history(3))
    (run / "checkpoint-50").mkdir()
    (run / "checkpoint-50" / "trainer_state.json").write_text(json.dumps({"log_history": _sdar_history(5)}))
    assert len(load_log_history(run)) == 3


def test_missing_dir_and_missing_metrics_raise_clear_errors(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="Run directory not found.*nope"):
        load_log_history(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty.*log_history\.json.*checkpoint-\*/trainer_state\.json"):
        load_log_history(empty)
    only_summary = _write_run(tmp_path / "summary_only", [SUMMARY_ENTRY])
    with pytest.raises(FileNotFoundError, match="No per-step training metrics"):
        plot_runs([only_summary], tmp_path / "plots")
    assert not (tmp_path / "plots").exists()  # nothing written before the inputs are validated


def test_plot_runs_writes_all_figures_for_two_runs(tmp_path):
    run_a = _write_run(tmp_path / "sdar", _sdar_history())
    run_b = _write_run(tmp_path / "grpo", _sdar_history(reward_offset=-0.1))
    (run_b / "log_history.json").unlink()  # the second run only has checkpoints and no SDAR diagnostics
    (run_b / "checkpoint-3").mkdir()
    grpo = [{k: v for k, v in entry.items() if not k.startswith("sdar/")} for entry in _sdar_history()]
    (run_b / "checkpoint-3" / "trainer_state.json").write_text(json.dumps({"log_history": grpo}))
    paths = plot_runs([run_a, run_b], tmp_path / "plots", smooth=0.5)
    assert [path.name for path in paths] == ["reward.png", "sdar_gate.png", "losses.png", "success_by_type.png"]
    assert sorted(path.name for path in (tmp_path / "plots").iterdir()) == sorted(path.name for path in paths)
    for path in paths:
        assert path.parent == tmp_path / "plots"
        _assert_png(path)


def test_figures_without_data_are_skipped(tmp_path):
    # A plain-GRPO run without environment metrics or SDAR diagnostics: only reward and losses apply.
    keep = ("step", "loss", "reward", "kl")
    run = _write_run(tmp_path / "grpo", [{k: v for k, v in e.items() if k in keep} for e in _sdar_history()])
    figures = build_figures([run])  # what plot_runs saves, without the slow PNG rendering
    assert list(figures) == ["reward.png", "losses.png"]
    assert len(figures["reward.png"].axes) == 1  # no success panel
    assert [ax.get_title() for ax in figures["losses.png"].axes] == ["Total loss (loss)", "KL to reference (kl)"]
    assert _gate_figure([load_log_history(run)], ["grpo"]) is None
    assert _success_by_type_figure([load_log_history(run)], ["grpo"]) is None


def test_gate_figure_overlays_one_line_per_run_with_reference_levels():
    histories = [_sdar_history(), _sdar_history(reward_offset=0.1)]
    fig = _gate_figure(histories, ["a", "b"])
    assert len(fig.axes) == 3
    for ax in fig.axes:
        assert len(_data_lines(ax)) == 2
        assert ax.get_title() and ax.get_xlabel() == "step" and ax.get_ylabel()
    gap_ax = next(ax for ax in fig.axes if "teacher_gap_mean" in ax.get_title())
    references = {line.get_label(): line.get_ydata()[0] for line in gap_ax.get_lines() if "≈" in line.get_label()}
    assert references == {"healthy SDAR ≈ −0.10": -0.10, "unstable ≈ −0.21": -0.21}
    assert [text.get_text() for text in gap_ax.get_legend().get_texts()][-2:] == list(references)


def test_missing_keys_per_run_are_skipped():
    full = _sdar_history()
    no_sdar = [{k: v for k, v in entry.items() if not k.startswith("sdar/")} for entry in full]
    no_sdar[1].pop("entropy")  # a key missing at one step only leaves a shorter curve
    losses = _losses_figure([full, no_sdar], ["sdar", "grpo"])
    panels = {ax.get_title(): ax for ax in losses.axes}
    assert len(panels) == 4
    assert [line.get_label() for line in panels["SDAR distillation loss (sdar/loss)"].get_lines()] == ["sdar"]
    entropy_lines = panels["Policy entropy (entropy)"].get_lines()
    assert [len(line.get_xdata()) for line in entropy_lines] == [3, 2]
    gate = _gate_figure([full, no_sdar], ["sdar", "grpo"])
    assert all(len(_data_lines(ax)) == 1 for ax in gate.axes)


def test_reward_figure_has_std_band_and_success_panel():
    histories = [_sdar_history(), _sdar_history(reward_offset=0.1)]
    fig = _reward_figure(histories, ["a", "b"])
    reward_ax, success_ax = fig.axes
    assert len(reward_ax.get_lines()) == 2 and len(reward_ax.collections) == 2  # one ±std band per run
    assert list(reward_ax.get_lines()[1].get_ydata()) == pytest.approx([0.3, 0.6, 0.5])
    assert [line.get_label() for line in success_ax.get_lines()] == ["a", "b"]


def test_smoothing_is_an_ema_and_raw_by_default():
    history = [{"step": s, "loss": v} for s, v in ((1, 1.0), (2, 0.0), (3, 0.0))]
    raw = _losses_figure([history], ["r"]).axes[0].get_lines()[0].get_ydata()
    smoothed = _losses_figure([history], ["r"], smooth=0.5).axes[0].get_lines()[0].get_ydata()
    assert list(raw) == [1.0, 0.0, 0.0]
    assert list(smoothed) == pytest.approx([1.0, 0.5, 0.25])  # y_t = 0.5·y_{t−1} + 0.5·x_t
    with pytest.raises(ValueError, match="smooth"):
        build_figures(["unused"], smooth=1.0)


def test_success_by_type_bars_runs_side_by_side():
    fig = _success_by_type_figure([_sdar_history(), _sdar_history(2)], ["a", "b"])
    (ax,) = fig.axes
    assert [label.get_text() for label in ax.get_xticklabels()] == ["clean", "pick"]
    assert len(ax.containers) == 2
    heights = [[bar.get_height() for bar in container] for container in ax.containers]
    assert heights == [pytest.approx([0.6, 0.3]), pytest.approx([0.4, 0.2])]  # last logged value per type


def test_default_labels_are_run_dir_names_and_label_count_is_checked(tmp_path):
    run_a = _write_run(tmp_path / "sdar_seed0", _sdar_history())
    run_b = _write_run(tmp_path / "grpo_seed0", _sdar_history())
    with pytest.raises(ValueError, match="labels"):
        build_figures([run_a, run_b], labels=["only-one"])
    figures = build_figures([run_a, run_b])
    assert [line.get_label() for line in _data_lines(figures["sdar_gate.png"].axes[0])] == ["sdar_seed0", "grpo_seed0"]
    custom = build_figures([run_a, run_b], labels=["SDAR", "GRPO"])
    assert [t.get_text() for t in custom["losses.png"].axes[0].get_legend().get_texts()] == ["SDAR", "GRPO"]


def test_summarize_run(tmp_path):
    run = _write_run(tmp_path / "run", [*_sdar_history(), SUMMARY_ENTRY])
    summary = summarize_run(run)
    assert summary["last_step"] == 3
    assert summary["final_reward"] == pytest.approx(0.4)
    assert summary["best_reward"] == pytest.approx(0.5)
    assert summary["final_success"] == pytest.approx(0.2)  # env/alfworld/success = reward / 2
    assert summary["best_success"] == pytest.approx(0.25)
    assert summary["last_teacher_gap"] == pytest.approx(-0.10)
    line = format_summary(summary)
    assert line.startswith("run: step 3") and "reward 0.400 (best 0.500)" in line and "teacher gap -0.100" in line


def test_summarize_run_without_optional_metrics(tmp_path):
    run = _write_run(tmp_path / "run", [{"step": 1, "loss": 0.3}, {"step": 2, "loss": math.inf, "reward": 0.1}])
    summary = summarize_run(run)
    assert summary["final_reward"] == summary["best_reward"] == pytest.approx(0.1)
    assert summary["final_success"] is None and summary["last_teacher_gap"] is None
    assert "success n/a" in format_summary(summary)


def test_several_environments_are_told_apart(tmp_path):
    history = [
        {"step": 1, "env/alfworld/success": 0.9, "env/webshop/success": 0.1, "env/webshop/success/buy": 0.3},
        {"step": 2, "env/alfworld/success": 0.4, "env/alfworld/success/pick": 0.5},
    ]
    (success_ax,) = _reward_figure([history], ["run"]).axes  # no reward logged: success panel only
    assert [line.get_label() for line in success_ax.get_lines()] == ["run · alfworld", "run · webshop"]
    assert [line.get_linestyle() for line in success_ax.get_lines()] == ["-", "--"]
    (bars_ax,) = _success_by_type_figure([history], ["run"]).axes
    assert [label.get_text() for label in bars_ax.get_xticklabels()] == ["alfworld/pick", "webshop/buy"]
    summary = summarize_run(_write_run(tmp_path / "run", history))
    assert summary["final_success"] == pytest.approx(0.4) and summary["best_success"] == pytest.approx(
        0.5
    )  # mean of envs
    assert summary["final_reward"] is None and "reward n/a (best n/a)" in format_summary(summary)
