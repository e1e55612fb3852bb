"""WebShop env: reward rules on hand cases, page machine, expert/random policies, catalog properties, real data."""

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
from rapidfuzz import fuzz

from trl_sdar.envs.base import AgentEnv
from trl_sdar.envs.webshop import (
    WebShopEnv,
    normalize_option,
    option_matches,
    parse_action,
    purchase_score,
    title_score,
    type_factor,
)
from trl_sdar.envs.webshop_catalog import (
    BUILTIN_NUM_GOALS,
    CATEGORIES,
    PRODUCT_TYPES,
    Goal,
    Product,
    generate_catalog,
    keyword_categories,
)


@pytest.fixture(scope="module")
def env() -> WebShopEnv:
    return WebShopEnv(seed=0)


def _goal(**kw) -> Goal:
    base = dict(
        instruction="i need a shirt",
        category="apparel",
        asin="B0X",
        query="shirt",
        category_path=("apparel", "shirt"),
        attributes=("long sleeve", "machine washable"),
        options=("navy blue", "large"),
        price_upper=40.0,
        keywords="shirt",
    )
    return Goal(**{**base, **kw})


def _product(**kw) -> Product:
    base = dict(
        asin="B0X",
        title="Acme Long Sleeve Shirt",
        category="apparel",
        query="shirt",
        category_path=("apparel", "shirt"),
        attributes=("long sleeve",),
        options=(),
        price=30.0,
        description="A shirt.",
        features=(),
        reviews=(),
    )
    return Product(**{**base, **kw})


def _play(env: WebShopEnv, task_id: int, policy, limit: int = 15):
    obs, result = env.reset(task_id), None
    for _ in range(limit):
        result = env.step(policy(obs))
        obs = result.observation
        if result.done:
            break
    return result


# --- reward rules ----------------------------------------------------------------------------------------------


def test_normalize_option_colour_variants_and_sizes():
    assert normalize_option("Navy Blue") == normalize_option("blue navy") == normalize_option("NAVY  BLUE")
    assert normalize_option("Heather Grey") == normalize_option("heather gray")
    assert normalize_option("52 x 84 inch") != normalize_option("84 x 52 inch")  # sizes keep word order
    assert normalize_option("x-large") != normalize_option("xx-large")
    assert option_matches(["navy blue", "large"], ["Blue Navy", "x-large"]) == 1


def test_purchase_score_hand_cases():
    goal = _goal()
    # 1 of 2 attributes, 1 of 2 options, price ok: (1 + 1 + 1) / (2 + 2 + 1) = 0.6, type factor 1.
    s = purchase_score(goal, _product(), ["Blue Navy", "small"])
    assert (s.attributes_matched, s.options_matched, s.price_ok, s.type_factor) == (1, 1, True, 1.0)
    assert s.total == pytest.approx(0.6)
    # Everything right: (2 + 2 + 1) / 5 = 1.0 exactly; the second attribute is found in the description.
    full = _product(description="It is machine washable.")
    assert purchase_score(goal, full, ["navy blue", "large"]).total == 1.0
    # Over budget: (2 + 2 + 0) / 5 = 0.8.
    assert purchase_score(goal, replace(full, price=40.01), ["navy blue", "large"]).total == pytest.approx(0.8)
    # Wrong product type with no title overlap: type factor 0 wipes the score.
    mug = _product(title="Acme Coffee Mug", query="coffee mug", category_path=("other", "coffee mug"))
    assert purchase_score(goal, mug, ["navy blue", "large"]).total == 0.0


def test_type_factor_levels():
    goal = _goal(query="alpha beta gamma delta epsilon", category_path=("x", "y"))
    other = dict(query="zzz", category_path=("p", "q"))
    assert title_score(goal.query, "Epsilon Gadget") == pytest.approx(0.2)
    assert type_factor(goal, _product(title="Epsilon Gadget", **other)) == 0.5  # 0.2 is not > 0.2, no match
    assert type_factor(goal, _product(title="Delta Epsilon", **other)) == 1.0  # 0.4 > 0.2
    goal12 = _goal(query=" ".join(f"w{i}" for i in range(12)), category_path=("x", "y"))
    assert type_factor(goal12, _product(title="w3 thing", **other)) == 0.1  # 1/12 < 0.1
    assert title_score("shirt", "Acme Shirts") == 1.0  # fuzzy: the plural still counts


def test_parse_action():
    assert parse_action("search[red shirt]") == ("search", "red shirt")
    assert parse_action(" Click[Buy Now] ") == ("click", "Buy Now")
    assert parse_action("click buy now") is None
    assert parse_action("search red]") is None


# --- page machine ----------------------------------------------------------------------------------------------


def test_page_transitions_and_action_strings(env):
    assert isinstance(env, AgentEnv)
    obs = env.reset(0)
    instruction = env.task(0).instruction
    assert obs.text == f"WebShop [SEP] Instruction: [SEP] {instruction} [SEP] Search"
    assert obs.admissible_actions == ("search[<your query>]", "click[search]")  # WebShop's available actions
    res = env.step("search[shirt]").observation
    assert res.text.startswith(
        f"Instruction: [SEP] {instruction} [SEP] Back to Search [SEP] Page 1 (Total results: 50)"
    )
    assert res.admissible_actions[:2] == ("click[back to search]", "click[next >]")
    assert "click[< prev]" not in res.admissible_actions and len(res.admissible_actions) == 12
    page2 = env.step("click[next >]").observation
    assert "Page 2" in page2.text and page2.admissible_actions[:3] == (
        "click[back to search]",
        "click[< prev]",
        "click[next >]",
    )
    asin = next(a for a in page2.admissible_actions if a.startswith("click[b0"))
    item = env.step(asin).observation
    head = ("click[back to search]", "click[< prev]", "click[description]", "click[features]", "click[reviews]")
    assert item.admissible_actions[:6] == (*head, "click[buy now]")
    values = [v.lower() for _, vs in env._product().options for v in vs]
    assert item.admissible_actions[6:] == tuple(f"click[{v}]" for v in dict.fromkeys(values))
    assert item.text.endswith("Rating: N.A. [SEP] Description [SEP] Features [SEP] Reviews [SEP] Buy Now")
    assert f"Price: {env._product().price_tag}" in item.text
    sub = env.step("click[features]").observation
    assert sub.admissible_actions == ("click[back to search]", "click[< prev]")
    assert env.step("click[< prev]").observation.text == item.text
    assert "Page 2" in env.step("click[< prev]").observation.text
    assert env.step("click[back to search]").observation == obs


def test_next_is_always_offered_and_search_works_from_any_page(env):
    env.reset(4)
    results = env.step("search[coffee mug]").observation
    for _ in range(5):  # 50 results, 10 a page: page 6 is empty but still offers Next >, as WebShop does
        results = env.step("click[next >]").observation
    assert "Page 6 (Total results: 50)" in results.text and "click[next >]" in results.admissible_actions
    assert not any(a.startswith("click[b0") for a in results.admissible_actions)
    item = env.step("search[coffee mug]").observation
    env.step(next(a for a in item.admissible_actions if a.startswith("click[b0")))
    again = env.step("search[yoga mat]").observation  # from an item page
    assert "Page 1 (Total results: 50)" in again.text


def test_option_click_replaces_the_choice_and_the_page_shows_no_selection(env):
    env.reset(1)
    env.step("search[shirt]")
    item = env.step(next(a for a in env._observe().admissible_actions if a.startswith("click[b0"))).observation
    options = env._product().options
    name, (first, second) = options[-1][0], options[-1][1][:2]
    env.step(f"click[{first}]")
    after = env.step(f"click[{second.upper()}]").observation  # clicks are case-insensitive
    assert env._state.chosen[-1] == (name, second) and all(v != first for _, v in env._state.chosen)
    assert after == item  # WebShop re-renders the same page: the choice only shows as a checked radio button


@pytest.mark.parametrize("action", ["jump", "click[nothing here]", "search[]", "click buy now", "", "click[search]"])
def test_bad_actions_do_nothing_silently(env, action):
    before = env.reset(2)
    result = env.step(action)
    assert not result.done and result.reward == 0.0 and result.observation == before
    results = env.step("search[lamp]").observation
    assert env.step(action).observation == results


def test_buy_ends_episode_and_later_steps_do_nothing(env):
    env.reset(3)
    env.step("search[shirt]")
    env.step(next(a for a in env._observe().admissible_actions if a.startswith("click[b0")))
    result = env.step("click[buy now]")
    assert result.done and result.score < 1.0 and result.reward == 0.0 and not result.won
    again = env.step("click[buy now]")
    assert again.done and again.reward == 0.0


# --- policies ----------------------------------------------------------------------------------------------------


def test_expert_buys_perfectly(env):
    for task_id in range(0, 140, 7):  # 20 tasks, every category
        result = _play(env, task_id, lambda obs: env.expert_action())
        assert result.done and result.won and result.score == 1.0 and result.reward == 10.0


def test_random_policy_mostly_fails(env):
    rng = random.Random(0)
    words = [t.name for t in PRODUCT_TYPES]

    def policy(obs):
        action = rng.choice(obs.admissible_actions)
        return f"search[{rng.choice(words)}]" if action.startswith("search") else action

    wins = sum(_play(env, task_id, policy).won for task_id in range(40))
    assert wins <= 2


# --- catalog -----------------------------------------------------------------------------------------------------


def test_catalog_is_deterministic_by_seed():
    assert generate_catalog(3, 30) == generate_catalog(3, 30)
    assert generate_catalog(3, 30).goals != generate_catalog(4, 30).goals
    assert WebShopEnv(seed=0).task(11) == WebShopEnv(seed=0).task(11)


def test_hard_negatives_score_below_one(env):
    by_asin = {p.asin: p for p in env.catalog.products}

    def best_score(goal, product):  # every offered value clicked: the most a purchase of it can score
        return purchase_score(goal, product, [v for _, values in product.options for v in values]).total

    for goal in env.catalog.goals[:100]:
        assert best_score(goal, by_asin[goal.asin]) == 1.0
        assert len(goal.hard_negatives) == 3
        for asin in goal.hard_negatives:
            negative = by_asin[asin]
            assert negative.query == goal.query and 0.0 < best_score(goal, negative) < 1.0


def test_colour_variants_appear_in_catalog(env):
    shown = {v for p in env.catalog.products for _, values in p.options for v in values}
    assert "Blue Navy" in shown or "Navy Blue" in shown
    assert any("grey" in v for v in shown)


def test_attributes_of_a_type_never_match_each_other():
    for ptype in PRODUCT_TYPES:
        for a in ptype.attributes:
            for b in ptype.attributes:
                if a != b:
                    assert fuzz.token_set_ratio(a, b) <= 85 and a not in b, (ptype.name, a, b)


def test_instructions_contain_exactly_their_category_keyword(env):
    seen = set()
    for task_id in range(env.num_tasks):
        task = env.task(task_id)
        expected = [] if task.task_type == "other" else [task.task_type]
        assert keyword_categories(task.instruction) == expected, task.instruction
        assert keyword_categories(task.instruction, whole_words=False) == expected, task.instruction
        assert "price lower than" in task.instruction
        seen.add(task.task_type)
    assert seen == set(CATEGORIES)


# --- real data adapter --------------------------------------------------------------------------------------------


def test_keyword_rule_word_starts():
    assert keyword_categories("i want a shampoo that smells nice") == ["beauty_health"]
    assert keyword_categories("i want a shampoo that smells nice", whole_words=False) == [
        "accessories",
        "beauty_health",
    ]
    assert keyword_categories("running shoes and a usb cable") == ["footwear", "electronics"]
    assert keyword_categories("a ceramic coffee mug") == []


def test_real_data_adapter(tmp_path):
    items = [
        {"asin": "B0REAL0001", "name": "Trailfox Men's Flannel Shirt", "full_description": "Soft flannel.",
         "small_description": ["Machine wash cold", "Long sleeve"], "pricing": "$24.99",
         "product_category": "Clothing › Men › Shirts", "query": "men's shirts", "category": "fashion",
         "customization_options": {"Color": [{"value": "Red Plaid"}, {"value": "Navy Blue"}],
                                   "Size": [{"value": "Large"}, {"value": "X-Large"}]}},
        {"asin": "B0REAL0002", "name": "Glowmate Desk Lamp", "full_description": "LED lamp.",
         "small_description": ["Dimmable"], "pricing": ["$30.00", "$35.00"], "product_category": "Home › Lighting",
         "query": "desk lamp", "category": "furniture", "customization_options": {}},
    ]  # fmt: skip
    attrs = {"B0REAL0001": {"attributes": ["long sleeve"]}, "B0REAL0002": {"attributes": ["dimmable"]}}
    human = {
        "B0REAL0001": [
            {
                "instruction": "I want a long sleeve flannel shirt in navy blue, size large",
                "instruction_attributes": ["long sleeve"],
                "instruction_options": ["navy blue", "large"],
            }
        ]
    }
    data = tmp_path / "data"
    data.mkdir()
    (data / "items_shuffle_1000.json").write_text(json.dumps(items))
    (data / "items_ins_v2_1000.json").write_text(json.dumps(attrs))
    (data / "items_human_ins.json").write_text(json.dumps(human))
    env = WebShopEnv(source="real", data_dir=tmp_path, goals="human")
    task = env.task(0)
    assert task.task_type == "apparel" and task.instruction.startswith("I want a long sleeve")
    assert env.num_tasks == 1 and env.task(0).info["price_upper"] > 24.99
    assert task.instruction.endswith(f", and price lower than {task.info['price_upper']:.2f} dollars")
    result = _play(env, 0, lambda obs: env.expert_action())
    assert result.won and result.reward == 10.0


def test_real_data_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"items_shuffle_1000\.json") as err:
        WebShopEnv(source="real", data_dir=tmp_path / "nowhere")
    assert "nowhere" in str(err.value)


# --- real data files (WebShop's formats) ---------------------------------------------------------------------------

FIXTURE = Path(__file__).parents[1] / "data" / "webshop"


def test_real_human_goals_carry_price_text_and_skip_goals_without_attributes():
    env = WebShopEnv(source="real", data_dir=FIXTURE, goals="human")
    assert env.num_tasks == 2  # the shirt's second instruction has no attributes: WebShop skips it
    shirt, lamp = env.task(0), env.task(1)
    assert shirt.instruction.startswith("I want a long sleeve flannel shirt in navy blue, size large, and price")
    for task, price in ((shirt, 24.99), (lamp, 45.5)):
        upper = task.info["price_upper"]
        above = [p for p in (10.0 * i for i in range(1, 100)) if p > price][:4]
        assert upper in above[1:] and task.instruction.endswith(f", and price lower than {upper:.2f} dollars")
    assert lamp.info["options"] == ["black | white"]
    for task_id in range(2):
        assert _play(env, task_id, lambda obs: env.expert_action()).won


def test_real_synthetic_goals_get_one_goal_per_option_combination():
    env = WebShopEnv(source="real", data_dir=FIXTURE, goals="synthetic")
    texts = [env.task(i).instruction for i in range(env.num_tasks)]
    assert env.num_tasks == 4 + 1 + 2  # shirt: 2 colours x 2 sizes; desk lamp: no options; floor lamp: 2 colours
    shirt = [t for t in texts if "flannel" in t]
    assert len(shirt) == 4 and "i need a long sleeve flannel shirt with color: red plaid, and size: large" in shirt[0]
    assert {env.task(i).info["price_upper"] for i in range(4)} == {env.task(0).info["price_upper"]}
    assert any(t.startswith("i want a dimmable desk lamp, and price lower than") for t in texts)
    assert all("price lower than" in t for t in texts)
    assert all(_play(env, i, lambda obs: env.expert_action()).won for i in range(env.num_tasks))


def test_real_pages_render_webshop_price_tags_options_and_reviews():
    env = WebShopEnv(source="real", data_dir=FIXTURE, goals="synthetic")
    env.reset(0)
    results = env.step("search[lamp]").observation
    assert "B0REAL0002 [SEP] Glowmate Dimmable Desk Lamp [SEP] $30.0 to $35.0" in results.text
    lamp = next(p for p in env.catalog.products if p.asin == "B0REAL0002")
    assert 30.0 <= lamp.price <= 35.0  # WebShop scores a range by one price drawn inside it
    item = env.step("click[b0real0003]").observation
    assert "color [SEP] black | white [SEP] brass" in item.text and "click[black | white]" in item.admissible_actions
    env.step("search[flannel shirt]")
    env.step("click[b0real0001]")
    assert env.step("click[reviews]").observation.text.endswith('< Prev [SEP] "Warm" [SEP] 5 [SEP] Keeps me warm.')


def test_type_factor_uses_title_nouns_like_webshop():
    goal = _goal(name="Trailfox Men's Flannel Shirt", query="men's shirts")
    same_nouns = _product(title="Flannel Shirt by Acme", query="shirt", category_path=("x",))
    other = _product(title="Glowmate Desk Lamp", query="lamp", category_path=("y",))
    assert type_factor(goal, same_nouns) == 1.0 and type_factor(goal, other) == 0.0
    # The earlier rule looked for the query words ("men's shirts") in the title instead.
    assert type_factor(goal, same_nouns, "query_words") == 1.0
    assert type_factor(_goal(name=""), other) == type_factor(_goal(name=""), other, "query_words")
    with pytest.raises(ValueError, match="type_match"):
        WebShopEnv(type_match="nouns")


def test_fuzzy_option_switch_is_webshops_rule():
    goal = _goal(options=("x-large",), attributes=())
    product = _product(options=(("size", ("x-large", "xx-large")),))
    assert purchase_score(goal, product, ["xx-large"], option_match="fuzzy").options_matched == 1
    assert purchase_score(goal, product, ["xx-large"]).options_matched == 0  # our default keeps hard negatives wrong
    with pytest.raises(ValueError, match="option_match"):
        WebShopEnv(option_match="approximate")


def test_builtin_catalog_is_the_same_for_training_and_evaluation():
    default = WebShopEnv(seed=0)
    assert default.num_tasks == BUILTIN_NUM_GOALS and len(default.catalog.products) == 4 * BUILTIN_NUM_GOALS
    from trl_sdar.commands.environments import env_kwargs

    training = env_kwargs("webshop", max_task_id=128 + 2048 - 1)
    assert WebShopEnv(**training).catalog is default.catalog  # the recipes' 2048 training goals share it


def test_builtin_instructions_end_with_webshops_price_text(env):
    for task_id in range(0, env.num_tasks, 50):
        task = env.task(task_id)
        assert task.instruction.endswith(f", and price lower than {task.info['price_upper']:.2f} dollars")
