"""WebShop env: reward rules on hand cases, page machine, expert/random policies, catalog properties, real data."""

import json
import random
from dataclasses import replace

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
    assert obs.text.startswith("WebShop [SEP] Instruction: [SEP] ") and obs.admissible_actions == (
        "search[<your query>]",
    )
    res = env.step("search[shirt]").observation
    assert "Page 1 (Total results: 50)" in res.text and "click[next >]" in res.admissible_actions
    assert "click[< prev]" not in res.admissible_actions
    page2 = env.step("click[next >]").observation
    assert "Page 2" in page2.text and "click[< prev]" in page2.admissible_actions
    asin = next(a for a in page2.admissible_actions if a.startswith("click[b0"))
    item = env.step(asin).observation
    for button in ("buy now", "description", "features", "reviews", "< prev", "back to search"):
        assert f"click[{button}]" in item.admissible_actions
    assert " [SEP] Buy Now" in item.text and "Price: $" in item.text
    sub = env.step("click[features]").observation
    assert sub.admissible_actions == ("click[back to search]", "click[< prev]")
    assert env.step("click[< prev]").observation.text == item.text
    assert "Page 2" in env.step("click[< prev]").observation.text
    assert env.step("click[back to search]").observation.admissible_actions == ("search[<your query>]",)


def test_option_click_is_recorded_and_replaced(env):
    env.reset(1)
    env.step("search[shirt]")
    item = env.step(next(a for a in env._observe().admissible_actions if a.startswith("click[b0"))).observation
    options = env._product().options
    first, second = options[-1][1][0], options[-1][1][1]
    env.step(f"click[{first}]")
    text = env.step(f"click[{second.upper()}]").observation.text  # clicks are case-insensitive
    assert f"{options[-1][0]}: {second}" in text and f"{options[-1][0]}: {first}" not in text
    assert item.admissible_actions == env._observe().admissible_actions


@pytest.mark.parametrize("action", ["jump", "click[nothing here]", "search[]", "click buy now", ""])
def test_bad_actions_are_noops(env, action):
    before = env.reset(2)
    result = env.step(action)
    assert not result.done and result.reward == 0.0 and result.observation.text.startswith("Invalid action")
    assert result.observation.admissible_actions == before.admissible_actions
    env.step("search[lamp]")
    after = env.step("search[shirt]")  # searching is only possible on the search page
    assert not after.done and after.observation.text.startswith("Invalid action")


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
    env = WebShopEnv(source="real", data_dir=tmp_path)
    task = env.task(0)
    assert task.task_type == "apparel" and task.instruction.startswith("i want a long sleeve")
    assert env.num_tasks == 1 and env.task(0).info["price_upper"] > 24.99
    result = _play(env, 0, lambda obs: env.expert_action())
    assert result.won and result.reward == 10.0


def test_real_data_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"items_shuffle\*\.json") as err:
        WebShopEnv(source="real", data_dir=tmp_path / "nowhere")
    assert "nowhere" in str(err.value)
