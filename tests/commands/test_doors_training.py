"""The doors world end to end: a warm start that sees the task's context, then SDAR with `skills: task`."""

import json

from trl_sdar.cli import main


def _recipe(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


COMMON = """model_name_or_path: builtin:tiny
env_name: doors
skills: task
max_turn_tokens: 40
history_window: 1
use_cpu: true
bf16: false
learning_rate: 0.001
report_to: none
save_strategy: "no"
"""


def test_warm_start_on_random_rule_demos_then_sdar_with_the_task_context(tmp_path):
    sft = _recipe(
        tmp_path,
        "sft.yaml",
        COMMON
        + """env_options: {rule: random, context: informative, expert_reason: cue}
skills_fraction: 1.0
num_demos: 4
demo_task_start: 1000
max_steps: 1
per_device_train_batch_size: 4
""",
    )
    main(["sft", "--config", sft, "--output_dir", str(tmp_path / "warm"), "--max_turn_tokens", "64"])  # the cue reason
    assert (tmp_path / "warm" / "training_args.bin").is_file()  # the full model's folder saves (args pickled)
    demos = [json.loads(line) for line in (tmp_path / "warm" / "demos.jsonl").read_text().splitlines()]
    assert all(d["with_skills"] for d in demos)
    for d in demos:  # expert_reason: cue restates the room's cue before the move, and the move is the action
        action = d["completion"].split("<action>")[1].split("</action>")[0]
        cue = "The sign shows a " if action.endswith("door") else "The voice says "
        assert d["completion"].startswith(f"<think>{cue}") and f"The best move now is to {action}." in d["completion"]
    train = _recipe(
        tmp_path,
        "train.yaml",
        COMMON
        + """env_options: {context: noisy, noise: 0.5}
rollout_unit: turn
num_train_tasks: 4
max_turns: 3
num_generations: 2
per_device_train_batch_size: 2
max_completion_length: 40
max_steps: 1
logging_steps: 1
""",
    )
    main(["train", "--config", train, "--model_name_or_path", str(tmp_path / "warm"),
          "--output_dir", str(tmp_path / "run")])  # fmt: skip
    log = next(h for h in json.loads((tmp_path / "run" / "log_history.json").read_text()) if "loss" in h)
    assert log["sdar/rows_without_teacher"] == log["turn/padding_rows"]  # every real row had the task's context
    assert log["sdar/context_tokens"] > 0 and "env/doors/success" in log


def test_eval_takes_env_options_and_the_task_context(tmp_path):
    from _cli import error_line

    report = tmp_path / "random.json"
    main(["eval", "--env", "doors", "--policy", "random", "--num-tasks", "30", "--env-options", '{"rooms": 1}',
          "--output", str(report)])  # fmt: skip
    assert json.loads(report.read_text())["num_tasks"] == 30
    assert "['roms'] is no argument of the doors environment" in error_line(
        ["eval", "--env", "doors", "--policy", "random", "--env-options", '{"roms": 1}'])  # fmt: skip
    assert "env_options='x' is not valid; expected a JSON object" in error_line(
        ["eval", "--env", "doors", "--policy", "random", "--env-options", "x"])  # fmt: skip
