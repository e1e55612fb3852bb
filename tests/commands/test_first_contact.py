"""Bad input a new user gives is refused in one line before any work runs, and no finished work is lost
(issue 22): malformed recipes, output paths that are files or folders, contradicting options."""

import json
from pathlib import Path

import pytest
from _cli import error_line

from trl_sdar.cli import main

RECIPE = str(Path(__file__).parents[1] / "data" / "tiny_webshop.yaml")


@pytest.mark.parametrize("command", ["train", "sft"])
def test_malformed_yaml_recipe_is_one_line(command, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name_or_path: builtin:tiny\nenv_name: [webshop\n")
    message = error_line([command, "--config", str(bad)])
    assert message.startswith(f"trl-sdar {command}: error: --config {bad} is not valid YAML")
    assert "line" in message


def test_sft_output_dir_that_is_a_file_and_max_steps_0(tmp_path, tiny_model_dir):
    target = tmp_path / "a_file"
    target.write_text("x")
    argv = ["sft", "--model_name_or_path", tiny_model_dir, "--env_name", "search_qa", "--num_demos", "1",
            "--use_cpu", "true", "--bf16", "false", "--report_to", "none", "--save_strategy", "no"]  # fmt: skip
    assert "output_dir=" in error_line([*argv, "--output_dir", str(target)]) and "is a file" in error_line(
        [*argv, "--output_dir", str(target)]
    )
    message = error_line([*argv, "--output_dir", str(tmp_path / "out"), "--max_steps", "0"])
    assert "max_steps=0 is not valid" in message and "-1" in message


def test_train_max_steps_0_and_num_generations_0_are_one_line(tmp_path):
    assert "SDARConfig.max_steps=0 is not valid" in error_line(
        ["train", "--config", RECIPE, "--output_dir", str(tmp_path), "--max_steps", "0"]
    )
    assert "SDARConfig.num_generations=0 is not valid" in error_line(
        ["train", "--config", RECIPE, "--output_dir", str(tmp_path), "--num_generations", "0"]
    )
    message = error_line(["train", "--config", RECIPE, "--output_dir", str(tmp_path), "--sdar_coef", "inf"])
    assert "SDARConfig.sdar_coef=inf is not valid; expected a finite number" in message


def test_plot_output_dir_that_is_a_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log_history.json").write_text(json.dumps([{"step": 1, "loss": 0.5, "reward": 0.1}]))
    target = tmp_path / "a_file"
    target.write_text("x")
    message = error_line(["plot", str(run), "--output-dir", str(target)])
    assert message.startswith("trl-sdar plot: error: --output-dir=") and "is a file" in message


def test_eval_output_folder_gets_the_report_inside(tmp_path, monkeypatch):
    folder = tmp_path / "reports"
    folder.mkdir()
    main(["eval", "--env", "search_qa", "--policy", "expert", "--num-tasks", "2", "--output", str(folder)])
    report = json.loads((folder / "eval_report.json").read_text())
    assert report["num_tasks"] == 2 and report["success_rate"] == 1.0


def test_eval_output_under_a_file_is_refused_before_any_episode(tmp_path, monkeypatch):
    import trl_sdar.commands.evaluate.policy as policy

    def never(*args, **kwargs):
        raise AssertionError("an episode ran before the output path was checked")

    monkeypatch.setattr(policy, "evaluate_policy", never)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    message = error_line(["eval", "--env", "search_qa", "--policy", "expert", "--output", str(blocker / "r.json")])
    assert "is a file" in message


def test_eval_env_contradicting_the_manifest_is_refused():
    message = error_line(["eval", "--env", "alfworld", "--manifest", "webshop_builtin_eval128", "--policy", "expert"])
    assert "--env alfworld contradicts --manifest 'webshop_builtin_eval128'" in message and "webshop" in message


def test_train_from_an_adapter_folder_names_it_and_its_base(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "builtin:tiny"}))
    message = error_line(["train", "--config", RECIPE, "--output_dir", str(tmp_path / "out"), "--model_name_or_path",
                      str(adapter)])  # fmt: skip
    assert "is a LoRA adapter folder" in message and "its base model is 'builtin:tiny'" in message
    assert "model_type" not in message


@pytest.mark.parametrize("command", ["train", "sft"])
def test_quickstart_recipes_parse_without_the_checkpointing_future_warning(command, recwarn):
    import warnings

    from trl_sdar.commands.recipe.launch import parse_train_args
    from trl_sdar.commands.sft.args import parse_sft_args

    recipe = f"recipes/quickstart/{'sdar' if command == 'train' else 'sft'}_smollm2_alfworld_cpu.yaml"
    parse = parse_train_args if command == "train" else parse_sft_args
    warnings.simplefilter("always")
    training = parse(["--config", recipe])[1]
    assert training.activation_checkpointing is False and training.gradient_checkpointing is False
    training = parse(["--config", recipe, "--gradient_checkpointing", "true"])[1]
    assert training.activation_checkpointing is True  # the recipe's value under the new name
    deprecations = [str(w.message) for w in recwarn if "checkpointing" in str(w.message)]
    assert deprecations == []


def test_turn_unit_training_recipes_bound_the_tokens_per_backward():
    import yaml

    unbounded = []
    for path in sorted(Path("recipes").rglob("*.yaml")):
        recipe = yaml.safe_load(path.read_text())
        rl_turn_rows = (
            isinstance(recipe, dict) and recipe.get("rollout_unit") == "turn" and "num_generations" in recipe
        )
        if rl_turn_rows and recipe.get("max_tokens_per_backward") is None:
            unbounded.append(str(path))  # SDARTrainer would warn that memory grows with episode length
    assert unbounded == []


@pytest.mark.parametrize(
    "command, own, theirs",
    [("train", ["--env_name", "--sdar_coef", "--model_name_or_path"], "--learning_rate"),
     ("sft", ["--num_demos", "--model_name_or_path"], "--learning_rate")],
)  # fmt: skip
def test_recipe_help_shows_config_and_the_commands_own_options_first(command, own, theirs, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: trl-sdar {command} --config RECIPE.yaml")
    assert text.index("--config RECIPE.yaml  YAML recipe") < text.index(own[0])
    positions = [text.index(f"  {option} ") for option in [*own, theirs]]
    assert positions == sorted(positions)  # own options in their order, TRL's after them
