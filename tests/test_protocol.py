import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trl_sdar.envs.protocol import parse_turn


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
def test_valid_turns(text, tag, action):
    parsed = parse_turn(text, tag)
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
def test_invalid_turns_say_why(text, tag, reason):
    parsed = parse_turn(text, tag)
    assert not parsed.valid and parsed.action is None and reason in parsed.reason


def test_unknown_action_tag_is_a_programming_error():
    with pytest.raises(ValueError, match="action_tag"):
        parse_turn("<think>a</think><action>b</action>", "tool")


fragments = st.sampled_from(["<think>", "</think>", "<action>", "</action>", "<search>", "</search>", "<answer>",
                             "</answer>", "go to desk 1", " ", "\n", "[", "]", "中"])  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(fragments, st.text(max_size=8)), max_size=12), st.sampled_from(["action", "search_qa"]))
def test_parser_never_raises_and_valid_actions_are_clean(parts, tag):
    parsed = parse_turn("".join(parts), tag)
    if parsed.valid:
        assert parsed.action and parsed.action == parsed.action.strip() and "\n" not in parsed.action
        if tag == "search_qa":
            assert parsed.action.startswith(("search[", "answer[")) and parsed.action.endswith("]")
    else:
        assert parsed.reason
