"""Training and evaluation on some task types only (`task_types`, `--task-types`, `eval.task_types`)."""

import json

import pytest

from trl_sdar.cli import main
from trl_sdar.envs import make_env
from trl_sdar.envs.selection import select_task_types

# The built-in Search-QA's first 12 question kinds (checked by the first test, so a generator change shows here).
KINDS = ["single_hop", "multi_hop", "multi_hop", "comparison", "single_hop", "multi_hop", "multi_hop", "multi_hop",
         "single_hop", "single_hop", "comparison", "multi_hop"]  # fmt: skip


def test_selection_keeps_the_ids_of_the_types_in_order():
    env = make_env("search_qa")
    assert [env.task(i).task_type for i in range(12)] == KINDS
    assert select_task_types(env, range(12), ["comparison"]) == [3, 10]
    assert select_task_types(env, [10, 3, 0], ["comparison", "single_hop"]) == [10, 3, 0]  # the caller's order
    assert select_task_types(env, range(4), None) == [0, 1, 2, 3] == select_task_types(env, range(4), [])


def test_a_misspelled_type_lists_the_valid_types():
    env = make_env("search_qa")
    with pytest.raises(ValueError) as error:
        select_task_types(env, range(3), ["single_hop", "comparisn"], field="task_types")
    message = str(error.value)
    assert "task_types=['single_hop', 'comparisn']: 'comparisn' is not a search_qa task type" in message
    assert "did you mean 'comparison'?" in message
    assert "valid types: ['comparison', 'multi_hop', 'single_hop']" in message


def test_a_valid_type_absent_from_the_ids_says_where_it_first_occurs():
    env = make_env("search_qa")
    with pytest.raises(ValueError) as error:
        select_task_types(env, range(3), ["single_hop", "comparison"], field="task_types")
    message = str(error.value)
    assert "['comparison'] is a valid search_qa task type with no task among the 3 task(s)" in message
    assert "ids 0..2" in message and "types present: ['multi_hop', 'single_hop']" in message
    assert "the first such task is id 3: raise num_train_tasks" in message


def test_training_dataset_holds_only_the_selected_types():
    from trl_sdar.agent.rollout import EnvRollout

    rollout = EnvRollout(lambda: make_env("search_qa"), skills=None)
    dataset = rollout.dataset(range(12), ["multi_hop"])
    assert dataset["task_id"] == [i for i, kind in enumerate(KINDS) if kind == "multi_hop"]
    assert set(dataset["task_type"]) == {"multi_hop"}


def test_recipe_task_types_reach_the_training_tasks(tmp_path):
    from trl_sdar.commands.environments import build_env_rollout
    from trl_sdar.commands.recipe.launch import make_parser

    recipe = tmp_path / "r.yaml"
    recipe.write_text("env_name: search_qa\ntask_types: [comparison]\ntrain_task_start: 0\nnum_train_tasks: 12\n"
                      f"output_dir: {tmp_path / 'out'}\nuse_cpu: true\n")  # fmt: skip
    script, *_ = make_parser().parse_args_and_config(["--config", str(recipe)])
    assert script.task_types == ["comparison"]
    _, dataset = build_env_rollout(script)
    assert dataset["task_id"] == [3, 10]


def test_eval_selects_the_types_then_takes_the_first_n(tmp_path):
    out = tmp_path / "r.json"
    main(["eval", "--policy", "expert", "--manifest", "search_qa_builtin_eval128", "--task-types", "comparison",
          "--num-tasks", "2", "--output", str(out)])  # fmt: skip
    report = json.loads(out.read_text())
    assert report["task_ids"] == [3, 10] and report["task_types"] == ["comparison"]
    assert set(report["per_task_type"]) == {"comparison"} and report["success_rate"] == 1.0
    main(["eval", "--policy", "expert", "--env", "search_qa", "--num-tasks", "12", "--task-types",
          "comparison,single_hop", "--output", str(out)])  # fmt: skip
    assert json.loads(out.read_text())["task_ids"] == [0, 3, 4, 8, 9, 10]  # the range 0..11, filtered


def test_eval_task_type_errors_are_one_line(tmp_path):
    with pytest.raises(SystemExit, match=r"--task-types=\['cmparison'\]: 'cmparison' is not a search_qa task type"):
        main(["eval", "--policy", "expert", "--env", "search_qa", "--task-types", "cmparison"])
    with pytest.raises(SystemExit, match=r"more than the \d+ tasks of types \['comparison'\] of the manifest"):
        main(["eval", "--policy", "expert", "--manifest", "search_qa_builtin_eval128", "--task-types", "comparison",
              "--num-tasks", "128"])  # fmt: skip
    with pytest.raises(SystemExit):  # argparse: a repeated or empty name
        main(["eval", "--policy", "expert", "--env", "search_qa", "--task-types", "a,,b"])


def test_interleaving_takes_the_types_in_turn_each_in_its_seeded_order():
    from trl_sdar.envs.selection import interleave_task_types
    from trl_sdar.envs.task_order import order_items

    order = interleave_task_types(KINDS, seed=3)
    assert sorted(order) == list(range(12))
    s, m, c = "single_hop", "multi_hop", "comparison"  # first seen in this order; 4, 6 and 2 tasks
    assert [KINDS[i] for i in order] == [s, m, c, s, m, c, s, m, s, m, m, m]
    assert [i for i in order if KINDS[i] == m] == order_items([1, 2, 5, 6, 7, 11], 3)
    assert interleave_task_types(KINDS, seed=3) == order != interleave_task_types(KINDS, seed=4)
    assert interleave_task_types([], seed=0) == []


def test_balanced_training_steps_hold_every_type_in_equal_shares(tmp_path, tiny_model_dir):
    from trl_sdar.commands.recipe.launch import make_parser
    from trl_sdar.commands.train import build_trainer

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model_name_or_path: {tiny_model_dir}\nenv_name: doors\nenv_options: {{rooms: 1}}\n"
                      "balance_task_types: true\nnum_train_tasks: 60\nnum_generations: 4\nbf16: false\n"
                      "per_device_train_batch_size: 24\nskills: none\nsdar_coef: 0.0\nmax_completion_length: 8\n"
                      f"output_dir: {tmp_path / 'out'}\nuse_cpu: true\nreport_to: none\nseed: 5\n")  # fmt: skip
    script, training_args, model_args = make_parser().parse_args_and_config(["--config", str(recipe)])
    trainer, _ = build_trainer(script, training_args, model_args)
    assert trainer.args.shuffle_dataset is False
    steps = []
    for i, batch in enumerate(trainer.get_train_dataloader()):  # 6 tasks x 4 episodes per step
        steps.append([row["task_type"] for row in batch[::4]])
        if i == 4:
            break
    types = sorted({t for step in steps for t in step})
    assert len(types) == 3 and all(sorted(step) == sorted(types * 2) for step in steps)
    ids = trainer.train_dataset["task_id"]
    assert sorted(ids) == list(range(128, 188))  # every training task, once


def test_balancing_without_an_environment_is_refused():
    from trl_sdar.commands.recipe.args import SDARScriptArguments

    with pytest.raises(ValueError, match="balance_task_types=true needs an environment's task types"):
        SDARScriptArguments(env_name=None, dataset_name="d", balance_task_types=True)
