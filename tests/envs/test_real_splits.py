"""Real data splits as a recipe trains on them: task ids name a seeded permutation of the whole split.

The trees are built at the real scale (tests/envs/conftest.py): ALFWorld's 3,553 train games sort by path into
task-type blocks, Search-R1's train.parquet holds 79,168 NQ rows before 90,447 HotpotQA rows, WebShop's goals follow
the product file. A recipe's default ids (128 .. 128 + num_train_tasks - 1) must draw from the whole split.
"""

from __future__ import annotations

from collections import Counter

import pytest

from trl_sdar.commands.environments import env_kwargs
from trl_sdar.envs import make_env
from trl_sdar.envs.task_order import order_items

pytest.importorskip("alfworld")


def _types(env, ids) -> Counter:
    return Counter(env.task(i).task_type for i in ids)


def test_order_items_is_a_seeded_permutation():
    items = list(range(1000))
    assert order_items(items, None) == items
    first, again, other = order_items(items, 0), order_items(items, 0), order_items(items, 1)
    assert sorted(first) == items and first == again and first != other and first != items
    # pinned: the permutation of seed 0 must not change between Python versions or releases
    assert order_items(range(10), 0) == [9, 4, 0, 5, 2, 7, 1, 3, 6, 8]
    with pytest.raises(ValueError, match=r"task_order_seed=-1 .* null \(file order\) or an integer >= 0"):
        order_items(items, -1)


def test_alfworld_training_ids_cover_every_task_type(alfworld_tree):
    env = make_env("alfworld", **env_kwargs("alfworld", source="real", data_dir=str(alfworld_tree)))
    assert env.num_tasks == 3553
    counts = _types(env, range(128, 640))  # the ALFWorld recipes' ids
    # file order gave 180 look_at_obj_in_light + 332 pick_and_place_simple: 2 of 6 types
    assert len(counts) == 6, counts
    for task_type, share in {"pick_two_obj_and_place": 813, "look_at_obj_in_light": 308}.items():
        assert abs(counts[task_type] / 512 - share / 3553) < 0.05, counts
    file_order = make_env("alfworld", **env_kwargs("alfworld", source="real", data_dir=str(alfworld_tree),
                                                   task_order_seed=None))  # fmt: skip
    assert _types(file_order, range(128, 640)) == {"look_at_obj_in_light": 180, "pick_and_place_simple": 332}
    # the same seed, the same games; another seed, other games
    again = make_env("alfworld", **env_kwargs("alfworld", source="real", data_dir=str(alfworld_tree)))
    other = make_env("alfworld", **env_kwargs("alfworld", source="real", data_dir=str(alfworld_tree),
                                              task_order_seed=1))  # fmt: skip
    games = [env.task(i).info["gamefile"] for i in range(128, 140)]
    assert games == [again.task(i).info["gamefile"] for i in range(128, 140)]
    assert games != [other.task(i).info["gamefile"] for i in range(128, 140)]


def test_search_r1_training_ids_cover_nq_and_hotpotqa(search_r1_dir):
    path = str(search_r1_dir / "train.parquet")
    env = make_env("search_qa", **env_kwargs("search_qa", questions_path=path))
    sources = Counter(env.task(i).info["data_source"] for i in range(128, 4224))  # the Search-QA recipe's ids
    # file order gave 4,096 NQ questions and no HotpotQA one
    assert set(sources) == {"nq", "hotpotqa"}
    assert abs(sources["hotpotqa"] / 4096 - 90_447 / 169_615) < 0.03, sources
    file_order = make_env("search_qa", **env_kwargs("search_qa", questions_path=path, task_order_seed=None))
    assert {file_order.task(i).info["data_source"] for i in range(128, 4224)} == {"nq"}


def test_webshop_training_ids_cover_every_category(webshop_data):
    env = make_env("webshop", **env_kwargs("webshop", source="real", data_dir=str(webshop_data)))
    counts = _types(env, range(128, 640))
    assert len(counts) >= 4, counts  # file order: the goals of the first products, 2 categories
    file_order = make_env("webshop", **env_kwargs("webshop", source="real", data_dir=str(webshop_data),
                                                  task_order_seed=None))  # fmt: skip
    assert len(_types(file_order, range(128, 640))) <= 2


def test_recipe_seed_reaches_the_environment_and_the_run_record(alfworld_tree):
    from trl_sdar.commands.environments import training_env_kwargs, training_tasks_record
    from trl_sdar.commands.recipe.args import SDARScriptArguments

    script = SDARScriptArguments(env_source="real", env_data_dir=str(alfworld_tree), task_order_seed=7)
    assert training_env_kwargs(script)["task_order_seed"] == 7
    assert training_tasks_record(script) == {"env_name": "alfworld", "env_source": "real", "task_ids": [128, 639],
                                             "task_order_seed": 7}  # fmt: skip
    assert "task_order_seed" not in training_tasks_record(SDARScriptArguments())  # built-in games: ids are tasks
    with pytest.raises(ValueError, match=r"task_order_seed=-2 is not valid"):
        SDARScriptArguments(task_order_seed=-2)
