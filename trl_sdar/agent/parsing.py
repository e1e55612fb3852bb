"""The agent's output protocol (docs/method.md): pure parsers from raw model text to what the environment plays.

Two rule sets, chosen by `RolloutSettings.parser`:

* `"reference"` (default) reads a turn exactly as the paper's code does.
  ALFWorld / WebShop: the whole text is lower-cased; the action is what lies between the *first* `<action>` and the
  *first* `</action>`, wherever they stand (before or after the reasoning; later tags are ignored). The turn is
  format-invalid when either action tag is missing, when `<think>` or `</think>` is missing (checked on the original
  text, anywhere), or when it contains CJK ideographs (U+4E00–U+9FFF). An invalid turn is *still played*: with its
  extracted action, or, without action tags, with the last 30 (ALFWorld) / 20 (WebShop) characters of the lower-cased
  text, which the environment answers like any inadmissible command ("Nothing happens.").
  Search-QA: no reasoning tags are required. Everything after the first `</search>` (else the first `</answer>`) is
  cut; the first complete `<search>…</search>` block, else the first `<answer>…</answer>` block, is the action (tags
  matched case-insensitively). The turn is invalid without such a block (nothing is played), or when the text holds
  both a `<search>` and an `<answer>` tag, or more than one of either; the extracted block is still played then.
* `"strict"` (this project's earlier rules): `<think>…</think>` first, then exactly one non-empty action block after
  it; no lower-casing; CJK of any script invalid; an invalid turn is never played.

The format penalty (`invalid_format_penalty`) is charged for every invalid turn in both rule sets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PARSERS = ("reference", "strict")
_TAIL_CHARS = {"alfworld": 30, "webshop": 20}  # what the reference plays when a turn has no action tags
_CJK_IDEOGRAPHS = re.compile(r"[\u4e00-\u9fff]")
_CJK_ANY = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_TAG = {name: re.compile(rf"<{name}>(.*?)</{name}>", re.DOTALL) for name in ("action", "search", "answer")}
_OPEN = re.compile(r"<(action|search|answer)>")
_SEARCH_BLOCK = re.compile(r"<search>(.*?)</search>", re.IGNORECASE | re.DOTALL)
_ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_SEARCH_OPEN = re.compile(r"<search>", re.IGNORECASE)
_ANSWER_OPEN = re.compile(r"<answer>", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedTurn:
    """A parsed model turn.

    `action` is what `env.step` plays (None: nothing is played this turn); `valid` is the format check that decides
    the penalty; `reason` says why a turn is invalid ("" when valid).
    """

    action: str | None
    valid: bool = True
    reason: str = ""


def _invalid(reason: str, action: str | None = None) -> ParsedTurn:
    return ParsedTurn(action=action, valid=False, reason=reason)


def parse_turn(text: str, action_tag: str, *, rules: str = "reference", env_name: str = "") -> ParsedTurn:
    """Parse one model turn. `action_tag` is `"action"` (ALFWorld, WebShop) or `"search_qa"`; `rules` one of
    `PARSERS`; `env_name` picks the reference's fallback length for untagged turns. Never raises on model text."""
    if action_tag not in ("action", "search_qa"):
        raise ValueError(f"Unknown action_tag {action_tag!r}; expected 'action' or 'search_qa'.")
    if rules not in PARSERS:
        raise ValueError(f"Unknown parser rules {rules!r}; expected one of {list(PARSERS)}.")
    if not isinstance(text, str):
        return _invalid("not text")
    if rules == "reference":
        if action_tag == "search_qa":
            return _reference_search(text)
        return _reference_action(text, _TAIL_CHARS.get(env_name, 30))
    return _strict(text, action_tag)


# --- the reference rules ------------------------------------------------------------------------------------------


def _reference_action(text: str, tail_chars: int) -> ParsedTurn:
    lowered = text.lower()
    start, end = lowered.find("<action>"), lowered.find("</action>")
    if start == -1 or end == -1:
        return _invalid("missing <action> or </action>", lowered[-tail_chars:])
    action = lowered[start + len("<action>") : end].strip()  # empty when </action> comes first, as in the reference
    if "<think>" not in text or "</think>" not in text:
        return _invalid("missing <think> or </think>", action)
    if _CJK_IDEOGRAPHS.search(text):
        return _invalid("contains CJK characters", action)
    return ParsedTurn(action)


def _reference_search(text: str) -> ParsedTurn:
    cut = text
    if "</search>" in cut:
        cut = cut.split("</search>", 1)[0] + "</search>"
    elif "</answer>" in cut:
        cut = cut.split("</answer>", 1)[0] + "</answer>"
    match = _SEARCH_BLOCK.search(cut)
    kind = "search"
    if match is None:
        match, kind = _ANSWER_BLOCK.search(cut), "answer"
    if match is None:
        return _invalid("expected <search>…</search> or <answer>…</answer>")
    action = f"{kind}[{match.group(1).strip()}]"
    searches, answers = len(_SEARCH_OPEN.findall(text)), len(_ANSWER_OPEN.findall(text))
    if searches and answers:
        return _invalid("both <search> and <answer>", action)
    if searches > 1 or answers > 1:
        return _invalid("more than one <search> or <answer>", action)
    return ParsedTurn(action)


# --- the strict rules ---------------------------------------------------------------------------------------------


def _strict(text: str, action_tag: str) -> ParsedTurn:
    if _CJK_ANY.search(text):
        return _invalid("contains CJK characters")
    think = _THINK.search(text)
    if think is None:
        return _invalid("missing <think>…</think>")
    rest = text[think.end() :]
    if action_tag == "search_qa":
        return _strict_search(rest)
    blocks = _TAG["action"].findall(rest)
    if len(blocks) != 1:
        return _invalid("expected exactly one <action>…</action> after </think>")
    action = " ".join(blocks[0].split())
    return ParsedTurn(action) if action else _invalid("empty action")


def _strict_search(rest: str) -> ParsedTurn:
    first = _OPEN.search(rest)
    if first is None or first.group(1) == "action":
        return _invalid("expected <search>…</search> or <answer>…</answer> after </think>")
    kind = first.group(1)
    match = _TAG[kind].search(rest, first.start())
    if match is None:
        return _invalid(f"unclosed <{kind}>")
    content = " ".join(match.group(1).split())
    return ParsedTurn(f"{kind}[{content}]") if content else _invalid(f"empty <{kind}>")
