"""metrics.jsonl: appended as logged (a killed run keeps its curves), read back by `trl-sdar plot`."""

import json
import os

from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_sdar import SDARConfig, SDARTrainer
from trl_sdar.commands.plot.figures import load_log_history
from trl_sdar.method.metrics_log import METRICS_FILE, read_metrics_jsonl


def length_reward(completions, **kwargs):
    return [float(len(c[0]["content"]) % 5) for c in completions]


def test_every_log_is_appended_as_it_is_logged(tiny_model_dir, tmp_path):
    rows = [{"prompt": [{"role": "user", "content": f"task {i}"}], "privileged_context": "rinse"} for i in range(4)]
    args = SDARConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                      num_generations=2, per_device_train_batch_size=2, max_completion_length=6, max_steps=3,
                      gradient_checkpointing=False, logging_steps=1, seed=3)  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    trainer = SDARTrainer(model, length_reward, args, Dataset.from_list(rows), processing_class=tokenizer)
    seen = []

    class Spy:  # reads the file at each log: the line must be on disk before training goes on
        def __getattr__(self, name):
            return lambda *a, **k: None

        def on_log(self, args, state, control, logs=None, **kwargs):
            seen.append(len((tmp_path / METRICS_FILE).read_text().splitlines()))

    trainer.add_callback(Spy())
    trainer.train()
    lines = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert lines == trainer.state.log_history  # same entries, same order, summary included
    assert [e["step"] for e in lines if "sdar/gate_mean" in e] == [1, 2, 3]
    assert seen == [1, 2, 3, 4]


def _write(path, entries, tail=""):
    path.write_text("".join(json.dumps(e) + "\n" for e in entries) + tail)


def test_resumed_run_entries_replace_the_interrupted_runs_and_a_cut_last_line_is_skipped(tmp_path):
    first = [{"loss": 1.0, "step": 1}, {"loss": 2.0, "step": 2}, {"loss": 3.0, "step": 3}]
    resumed = [{"loss": 20.0, "step": 2}, {"loss": 30.0, "step": 3}, {"loss": 40.0, "step": 4}]
    summary = {"train_runtime": 1.0, "train_loss": 0.5, "step": 4}
    path = tmp_path / METRICS_FILE
    _write(path, [*first, *resumed, summary], tail='{"loss": 5.0, "st')
    entries = read_metrics_jsonl(path)
    assert [(e["step"], e.get("loss")) for e in entries] == [(1, 1.0), (2, 20.0), (3, 30.0), (4, 40.0), (4, None)]
    path.write_text('{"loss": 1.0, "step": 1}\nnot json\n{"loss": 2.0, "step": 2}\n')
    try:
        read_metrics_jsonl(path)
    except ValueError as error:
        assert f"{path}:2" in str(error)
    else:
        raise AssertionError("a malformed middle line must be reported")


def test_plot_reads_a_killed_runs_metrics_and_prefers_the_newer_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _write(run / METRICS_FILE, [{"loss": 1.0, "reward": 0.1, "step": 1}, {"loss": 0.5, "reward": 0.2, "step": 2}])
    assert [e["step"] for e in load_log_history(run)] == [1, 2]  # killed: no log_history.json, no checkpoint
    (run / "log_history.json").write_text(json.dumps([{"loss": 9.0, "reward": 0.0, "step": 1}]))
    assert [e["loss"] for e in load_log_history(run)] == [9.0]  # written last: the finished run's own history
    stale = os.stat(run / "log_history.json").st_mtime_ns - 10**9
    os.utime(run / "log_history.json", ns=(stale, stale))  # then resumed, trained further, killed
    assert [e["loss"] for e in load_log_history(run)] == [1.0, 0.5]
