import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trl_sdar.agent.parsing import parse_turn


@pytest.mark.parametrize(
    "text, tag, action",
    [
        ("<think>the mug is here</think><action>take mug 1</action>", "action", "take mug 1"),
        ("<think>x</think>\n<action>  go to   sinkbasin 1 </action>", "action", "go to sinkbasin 1"),
        ("<think>look</think><action>search[red shirt]</action>", "action", "search[red shirt]"),
        ("<think>need info</think><search>founder of Marrow</search>", "search_qa", "search[founder of Marrow]"),
        ("<think>done</think><answer> Tessin </answer>", "search_qa", "answer[Tessin]"),
    ],
)  # fmt: skip
def test_strict_valid_turns(text, tag, action):
    parsed = parse_turn(text, tag, rules="strict")
    assert parsed.valid and parsed.action == action and parsed.reason == ""


@pytest.mark.parametrize(
    "text, tag, reason",
    [
        ("<action>go to desk 1</action>", "action", "missing <think>"),
        ("<think>hmm</think>", "action", "exactly one <action>"),
        ("<think>a</think><action>go</action><action>take</action>", "action", "exactly one <action>"),
        ("<think>a</think><action>  </action>", "action", "empty action"),
        ("<think>去厨房</think><action>go to fridge 1</action>", "action", "CJK"),
        ("<think>a</think><search>unclosed", "search_qa", "unclosed <search>"),
        ("<think>a</think><action>search[x]</action>", "search_qa", "expected <search>"),
        ("<think>a</think><answer></answer>", "search_qa", "empty <answer>"),
    ],
)
def test_strict_invalid_turns_say_why(text, tag, reason):
    parsed = parse_turn(text, tag, rules="strict")
    assert not parsed.valid and parsed.action is None and reason in parsed.reason


def test_unknown_action_tag_is_a_programming_error():
    with pytest.raises(ValueError, match="action_tag"):
        parse_turn("<think>a</think><action>b</action>", "tool")
    with pytest.raises(ValueError, match="parser rules"):
        parse_turn("<think>a</think><action>b</action>", "action", rules="loose")


fragments = st.sampled_from(["<think>", "</think>", "<action>", "</action>", "<search>", "</search>", "<answer>",
                             "</answer>", "go to desk 1", " ", "\n", "[", "]", "中"])  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(fragments, st.text(max_size=8)), max_size=12), st.sampled_from(["action", "search_qa"]))
def test_strict_parser_never_raises_and_valid_actions_are_clean(parts, tag):
    parsed = parse_turn("".join(parts), tag, rules="strict")
    if parsed.valid:
        assert parsed.action and parsed.action == parsed.action.strip() and "\n" not in parsed.action
        if tag == "search_qa":
            assert parsed.action.startswith(("search[", "answer[")) and parsed.action.endswith("]")
    else:
        assert parsed.reason and parsed.action is None


# --- the reference rules (the paper's projection functions) --------------------------------------------------------


@pytest.mark.parametrize(
    "text, env, action, valid",
    [
        ("<think>mug</think><action>Take Mug 1 from Desk 1</action>", "alfworld", "take mug 1 from desk 1", True),
        # the action tag may stand before the reasoning; only the first <action> … first </action> counts
        ("<action> go to desk 1 </action><think>why</think>", "alfworld", "go to desk 1", True),
        ("<think>a</think><action>go</action><action>take</action>", "alfworld", "go", True),
        # </action> before <action>: the reference slices an empty action and keeps the turn valid
        ("<think>a</think></action>x<action>", "alfworld", "", True),
        # missing reasoning tags: invalid (penalised) but the extracted action is still played
        ("<action>open fridge 1</action>", "alfworld", "open fridge 1", False),
        ("<think>open it</think>", "alfworld", "<think>open it</think>"[-30:].lower(), False),
        # without action tags the last 30 (ALFWorld) / 20 (WebShop) lower-cased characters are played
        ("<think>x</think> I would now go to the Fridge number one", "alfworld",
         "<think>x</think> I would now go to the Fridge number one".lower()[-30:], False),
        ("<think>x</think> I would now go to the Fridge number one", "webshop",
         "<think>x</think> I would now go to the Fridge number one".lower()[-20:], False),
        # only CJK ideographs make a turn invalid (kana does not), the action is still played
        ("<think>去厨房</think><action>go to fridge 1</action>", "alfworld", "go to fridge 1", False),
        ("<think>きっちん</think><action>go to fridge 1</action>", "alfworld", "go to fridge 1", True),
        ("<think>ok</think><action>click[Buy Now]</action>", "webshop", "click[buy now]", True),
    ],
)  # fmt: skip
def test_reference_action_rules(text, env, action, valid):
    parsed = parse_turn(text, "action", rules="reference", env_name=env)
    assert (parsed.action, parsed.valid) == (action, valid)
    assert bool(parsed.reason) != valid


@pytest.mark.parametrize(
    "text, action, valid",
    [
        ("<think>x</think><search> founder of Marrow </search>", "search[founder of Marrow]", True),
        ("<answer>Tessin</answer>", "answer[Tessin]", True),  # no reasoning tags needed for Search-QA
        ("<SEARCH>who</SEARCH>", "search[who]", True),  # tags are matched case-insensitively
        # both kinds of tag: invalid, but the search block (first in priority) is still played
        ("<search>q</search> then <answer>a</answer>", "search[q]", False),
        ("<search>q1</search><search>q2</search>", "search[q1]", False),
        ("<answer>a</answer><answer>b</answer>", "answer[a]", False),
        ("I think it is Lisbon", None, False),  # nothing to play
        ("<search>unclosed", None, False),
        ("<think>x</think><action>search[x]</action>", None, False),
    ],
)  # fmt: skip
def test_reference_search_rules(text, action, valid):
    parsed = parse_turn(text, "search_qa", rules="reference")
    assert (parsed.action, parsed.valid) == (action, valid)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(fragments, st.text(max_size=8)), max_size=12), st.sampled_from(["alfworld", "webshop"]))
def test_reference_parser_always_plays_something_lower_case(parts, env):
    text = "".join(parts)
    parsed = parse_turn(text, "action", rules="reference", env_name=env)
    assert parsed.action is not None and parsed.action == parsed.action.lower()
    if parsed.valid:
        assert "<think>" in text and "</think>" in text and "<action>" in text.lower()
