"""Real WebShop data with SDAR's settings by default, each one settable from a recipe (`env_options`)."""

from __future__ import annotations

import pytest

from trl_sdar.envs.webshop import WebShopEnv


def _script(**fields):
    from trl_sdar.commands.recipe.args import SDARScriptArguments

    return SDARScriptArguments(env_name="webshop", **fields)


def _hits(env: WebShopEnv, query: str) -> int:
    env.reset(0)
    return len(env._index.top_k(query, 10_000))


def test_real_data_defaults_are_sdars(webshop_data):
    env = WebShopEnv(source="real", data_dir=webshop_data)
    # synthetic goals (human_goals False) over items_shuffle_1000.json (use_small): 1,000 products x 4 option combos
    assert len(env.catalog.products) == 1000 and env.num_tasks == 4000
    assert " with color: " in env.task(0).instruction  # synthetic goals name their options
    assert env.option_match == "fuzzy" and env.search == "webshop"
    # WebShop's search document: title, description, the first bullet and the options; Lucene's BM25(0.9, 0.4)
    assert (env._index.k1, env._index.b) == (0.9, 0.4)
    assert _hits(env, "navy") == 1000  # an option value
    assert _hits(env, "second") == 0  # only the first bullet is indexed


def test_every_default_can_be_set_from_a_recipe(webshop_data):
    from trl_sdar.commands.environments import training_env_kwargs

    options = {"goals": "human", "catalog": "full", "option_match": "exact", "search": "all_bullets"}
    script = _script(env_source="real", env_data_dir=str(webshop_data), env_options=options)
    env = WebShopEnv(**training_env_kwargs(script))
    assert len(env.catalog.products) == 1500 and env.num_tasks == 3000  # two human goals per product
    assert (env.option_match, env.search, env._index.k1, env._index.b) == ("exact", "all_bullets", 1.5, 0.75)
    assert _hits(env, "second") > 0 and _hits(env, "navy") == 0
    json_script = _script(env_source="real", env_data_dir=str(webshop_data), env_options='{"catalog": "full"}')
    assert training_env_kwargs(json_script)["catalog"] == "full"


def test_bad_settings_are_one_line_errors(webshop_data):
    from trl_sdar.commands.environments import training_env_kwargs

    with pytest.raises(ValueError, match=r"catalog must be one of \('small', 'full'\), got 'tiny'"):
        WebShopEnv(source="real", data_dir=webshop_data, catalog="tiny")
    with pytest.raises(ValueError, match=r"search must be one of \('webshop', 'all_bullets'\), got 'lucene'"):
        WebShopEnv(search="lucene")
    with pytest.raises(ValueError, match=r"catalog applies to source='real'"):
        WebShopEnv(catalog="small")
    with pytest.raises(ValueError, match=r"\['catalogue'\] is no argument of the webshop environment; valid: "):
        training_env_kwargs(_script(env_source="real", env_options={"catalogue": "full"}))
    with pytest.raises(ValueError, match=r"env_options='\{bad' is not valid; expected a JSON object"):
        _script(env_options="{bad")
