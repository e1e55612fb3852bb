"""The agent's output protocol (METHOD.md §6): pure parsers from raw model text to an environment action.

ALFWorld / WebShop: `<think>…</think>` then exactly one `<action>…</action>`.
Search-QA: `<think>…</think>` then `<search>query</search>` (→ `search[query]`) or `<answer>text</answer>`
(→ `answer[text]`). A turn without the tags, with an empty action, or with CJK characters is format-invalid; the
rollout charges the environment's `invalid_format_penalty` for it and does not step the environment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_TAG = {name: re.compile(rf"<{name}>(.*?)</{name}>", re.DOTALL) for name in ("action", "search", "answer")}
_OPEN = re.compile(r"<(action|search|answer)>")


@dataclass(frozen=True)
class ParsedTurn:
    """A parsed model turn: `action` is what `env.step` takes, or None when the turn is format-invalid."""

    action: str | None
    reason: str = ""  # why the turn is invalid ("" when valid)

    @property
    def valid(self) -> bool:
        return self.action is not None


def _invalid(reason: str) -> ParsedTurn:
    return ParsedTurn(action=None, reason=reason)


def parse_turn(text: str, action_tag: str) -> ParsedTurn:
    """Parse one model turn. `action_tag` is `"action"` (ALFWorld, WebShop) or `"search_qa"`. Never raises."""
    if not isinstance(text, str):
        return _invalid("not text")
    if _CJK.search(text):
        return _invalid("contains CJK characters")
    think = _THINK.search(text)
    if think is None:
        return _invalid("missing <think>…</think>")
    rest = text[think.end() :]
    if action_tag == "search_qa":
        return _parse_search(rest)
    if action_tag != "action":
        raise ValueError(f"Unknown action_tag {action_tag!r}; expected 'action' or 'search_qa'.")
    blocks = _TAG["action"].findall(rest)
    if len(blocks) != 1:
        return _invalid("expected exactly one <action>…</action> after </think>")
    action = " ".join(blocks[0].split())
    return ParsedTurn(action) if action else _invalid("empty action")


def _parse_search(rest: str) -> ParsedTurn:
    first = _OPEN.search(rest)
    if first is None or first.group(1) == "action":
        return _invalid("expected <search>…</search> or <answer>…</answer> after </think>")
    kind = first.group(1)
    match = _TAG[kind].search(rest, first.start())
    if match is None:
        return _invalid(f"unclosed <{kind}>")
    content = " ".join(match.group(1).split())
    return ParsedTurn(f"{kind}[{content}]") if content else _invalid(f"empty <{kind}>")
