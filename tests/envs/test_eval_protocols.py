"""The reference's evaluation protocols on real-format data: ALFWorld's seeded random 128 valid_seen games, Search-QA
greedy over the whole test file, reported per source, with a history window of 4."""

from __future__ import annotations

from collections import Counter

import pytest
from real_data_trees import ALFWORLD_COUNTS, SEARCH_R1_TEST

from trl_sdar.commands.evaluate.args import parse_eval_args
from trl_sdar.commands.evaluate.run import _eval_setup


def _setup(argv: list[str]):
    return _eval_setup(parse_eval_args(argv))


def test_alfworld_valid_seen_manifest_is_a_seeded_random_128(alfworld_tree):
    pytest.importorskip("alfworld")
    argv = ["--policy", "expert", "--env-source", "real", "--env-data-dir", str(alfworld_tree), "--manifest"]
    env_name, task_ids, factory = _setup([*argv, "alfworld_real_valid_seen128"])
    env = factory()
    types = Counter(env.task(i).task_type for i in task_ids)
    assert env_name == "alfworld" and len(task_ids) == 128 and env.split == "valid_seen"
    # the first 128 of the sorted list kept 12 of the 24 pick-two games; a uniform 128 of 140 keeps about 22
    assert types["pick_two_obj_and_place"] >= 18 and len(types) == 6, types
    games = [env.task(i).info["game"] for i in task_ids]
    assert len(set(games)) == 128 and games == [factory().task(i).info["game"] for i in task_ids]
    _, unseen_ids, unseen = _setup([*argv, "alfworld_real_valid_unseen128"])
    unseen_env = unseen()
    assert unseen_env.split == "valid_unseen" and unseen_env.num_tasks == sum(ALFWORLD_COUNTS["valid_unseen"].values())
    assert len({unseen_env.task(i).info["game"] for i in unseen_ids}) == 128


def test_games_pin_alfworld_tasks_by_path(alfworld_tree):
    pytest.importorskip("alfworld")
    from trl_sdar.envs.alfworld import AlfworldEnv

    split = AlfworldEnv(source="real", split="valid_seen", data_dir=alfworld_tree)
    names = [split.task(i).info["game"] for i in (139, 3, 70)]
    pinned = AlfworldEnv(source="real", split="valid_seen", data_dir=alfworld_tree, games=names)
    assert pinned.num_tasks == 3 and [pinned.task(i).info["game"] for i in range(3)] == names
    with pytest.raises(ValueError, match=r"games: nope/trial_1 is not among the 140 playable games of split"):
        AlfworldEnv(source="real", split="valid_seen", data_dir=alfworld_tree, games=["nope/trial_1"])


def test_search_qa_eval_covers_the_test_file_greedily_per_source(search_r1_dir):
    path = str(search_r1_dir / "test.parquet")
    args = parse_eval_args(["--model", "m", "--env", "search_qa", "--questions-path", path, "--temperature", "0",
                            "--retriever-url", "http://127.0.0.1:8000/retrieve"])  # fmt: skip
    assert args.temperature == 0.0
    env_name, task_ids, factory = _eval_setup(args)
    env = factory()
    assert len(task_ids) == 51_713 and env.retriever.url == "http://127.0.0.1:8000/retrieve"
    # each question's task type is its source: the report's per-type table is the reference's 7 sources
    assert Counter(env.task(i).task_type for i in task_ids) == SEARCH_R1_TEST


def test_search_qa_history_window_is_4_in_eval_and_recipes():
    from trl_sdar.commands.environments import default_history_window
    from trl_sdar.commands.recipe.args import SDARScriptArguments

    assert parse_eval_args(["--model", "m", "--env", "search_qa"]).history_window is None  # the benchmark's
    assert [default_history_window(e) for e in ("alfworld", "webshop", "search_qa")] == [2, 2, 4]
    assert SDARScriptArguments(env_name="search_qa").history_window is None
    with pytest.raises(SystemExit, match=r"-0.5 is not valid; expected a number >= 0"):
        parse_eval_args(["--model", "m", "--temperature", "-0.5"])


def test_eval_report_records_alfworld_games_by_path(alfworld_tree, tmp_path):
    pytest.importorskip("alfworld")
    from trl_sdar.commands.evaluate.run import _games_by_path

    argv = ["--policy", "expert", "--env-source", "real", "--env-data-dir", str(alfworld_tree), "--manifest",
            "alfworld_real_valid_seen128"]  # fmt: skip
    _, task_ids, factory = _setup(argv)
    games = _games_by_path(factory, task_ids)
    assert len(games) == 128 and all(g.count("/") == 1 for g in games)
    assert _games_by_path(_setup(["--policy", "random", "--env", "webshop", "--num-tasks", "3"])[2], [0, 1, 2]) == []
