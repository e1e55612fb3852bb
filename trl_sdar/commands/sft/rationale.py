"""Short, truthful rationales for expert actions: what the agent needs next and why this action gets it.

The text is built from the task and the expert's own plan (never from hidden state the agent could not know): for
ALFWorld the next commands of the plan (`go to X` followed by `take Y from X` reads "I still need a Y; I will look
at X"), for WebShop the kind of click and the options the instruction asks for, for Search-QA the query and the
answer. Each situation has a few phrasings; which one is used is drawn from a seeded `random.Random`, so the same
demonstration seed renders the same text.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from trl_sdar.envs.base import Task

_ALF_DO = {"clean": "clean", "heat": "heat", "cool": "cool", "use": "use", "move": "put", "put": "put"}
_ALF_WHY = {"clean": "to clean it", "heat": "to heat it", "cool": "to cool it", "put": "to put it there",
            "use": "for the light"}  # fmt: skip


def _pick(rng: random.Random, options: Sequence[str]) -> str:
    return options[rng.randrange(len(options))]


def entity_class(name: str) -> str:
    """`potato 1` → `potato`."""
    return re.sub(r"\s+\d+$", "", name.strip())


def parse_alfworld_command(command: str) -> tuple[str, str, str]:
    """(verb, object, receptacle) of an ALFWorld command; missing parts are ""."""
    for verb, pattern in (
        ("take", r"take (.+) from (.+)"),
        ("move", r"move (.+) to (.+)"),
        ("put", r"put (.+) (?:in|on|in/on) (.+)"),
        ("clean", r"clean (.+) with (.+)"),
        ("heat", r"heat (.+) with (.+)"),
        ("cool", r"cool (.+) with (.+)"),
    ):
        match = re.fullmatch(pattern, command)
        if match:
            return verb, match.group(1), match.group(2)
    for verb in ("go to", "open", "close", "use", "examine"):
        if command.startswith(verb + " "):
            return verb, "", command[len(verb) + 1 :]
    return command, "", ""


def _after_arriving(plan: Sequence[str]) -> tuple[str, str, str]:
    """What the plan does once it has gone somewhere: the command after the `go to` (after an `open`, if any)."""
    rest = [c for c in plan[1:3] if not c.startswith("open ")]
    return parse_alfworld_command(rest[0]) if rest else ("", "", "")


def alfworld_rationale(task: Task, plan: Sequence[str], holding: str, rng: random.Random) -> str:
    """Why the first command of `plan` (the expert's remaining plan) is played; `holding` is the object in hand."""
    verb, obj, where = parse_alfworld_command(plan[0])
    if verb == "go to":
        then, then_obj, _ = _after_arriving(plan)
        if then == "take":
            wanted, goal = entity_class(then_obj), task.instruction.rstrip(".")
            return _pick(rng, (f"I still need a {wanted}. I will look for it at {where}.",
                               f"The task is to {goal}. First I need a {wanted}, so I check {where}.",
                               f"No {wanted} in hand yet; {where} is the next place to search."))  # fmt: skip
        purpose = _ALF_WHY.get(_ALF_DO.get(then, ""), "to finish the task")
        carried = entity_class(holding) if holding else "object"
        return _pick(rng, (f"I have the {carried}. Now I go to {where} {purpose}.",
                           f"Holding the {carried}, I head to {where} {purpose}."))  # fmt: skip
    if verb == "open":
        return _pick(rng, (f"{where} is closed; I open it to see inside.", f"I open {where} first."))
    if verb == "take":
        return _pick(rng, (f"Here is {obj}, which the task needs. I pick it up.",
                           f"{obj} is here; I take it."))  # fmt: skip
    if verb in ("clean", "heat", "cool"):
        return _pick(rng, (f"The task wants the {entity_class(obj)} {verb}ed, so I {verb} it with {where}.",
                           f"Now I {verb} {obj} with {where}."))  # fmt: skip
    if verb in ("move", "put"):
        last = len(plan) == 1
        done = " That completes the task." if last else ""
        return _pick(rng, (f"I place {obj} in/on {where}.{done}", f"Time to put {obj} on {where}.{done}"))
    if verb == "use":
        return _pick(rng, (f"I hold the {entity_class(holding) or 'object'}; turning on {where} lets me examine "
                           "it in the light.", f"With the object in hand, I switch on {where}."))  # fmt: skip
    return _pick(rng, ("I look around to see where things are.", "Let me check my surroundings first."))


def search_step_rationale(command: str, wanted: str, rng: random.Random, first: bool = False) -> str:
    """Why a search step (`go to R` to look there, or `open R` to look inside) is played while `wanted` is unseen;
    `first`: the search's first move (nothing looked at yet)."""
    verb, _, where = parse_alfworld_command(command)
    if first:
        return _pick(rng, (f"I need a {wanted}, and I do not know where it is. I start the search at {where}.",
                           f"First I have to find a {wanted}; I check {where} first."))  # fmt: skip
    if verb == "open":
        return _pick(rng, (f"No {wanted} in sight, and {where} is closed; I open it to look inside.",
                           f"I open {where} to see whether the {wanted} is in it."))  # fmt: skip
    return _pick(rng, (f"I do not see a {wanted} here. I will search {where} next.",
                       f"No {wanted} yet; the next place to check is {where}."))  # fmt: skip


def webshop_rationale(task: Task, action: str, searches_done: int, rng: random.Random) -> str:
    """Why the WebShop expert's `action` is played (`searches_done`: searches already sent this episode)."""
    inner = action[action.index("[") + 1 : -1] if "[" in action else action
    if action.startswith("search["):
        if searches_done == 0:
            return _pick(rng, ("I search with the key words of the request.",
                               f"To find what I need, I search for: {inner}."))  # fmt: skip
        return _pick(rng, ("The product was not among those results; I try a more precise query.",
                           "I search again, by the product's name this time."))  # fmt: skip
    if inner == "buy now":
        return _pick(rng, ("The requested options are chosen and the price fits; I buy it.",
                           "This item matches the request. Buying it now."))  # fmt: skip
    if inner == "next >":
        return _pick(rng, ("Nothing on this page fits the request; I look at the next page.",
                           "I go on to the next page of results."))  # fmt: skip
    if inner == "< prev":
        return _pick(rng, ("This is not the product I want; I go back.", "Wrong page for this request; back."))
    options = {o.lower() for o in task.info.get("options", [])}
    if inner in options:
        return _pick(rng, (f"The request asks for {inner}; I select it.", f"I choose the option {inner}."))
    return _pick(rng, (f"Result {inner} matches what the request describes; I open it.",
                       f"{inner} looks like the right product. Let me open it."))  # fmt: skip


def search_rationale(task: Task, action: str, searches_done: int, rng: random.Random) -> str:
    """Why the Search-QA expert's `action` (`search[q]` or `answer[a]`) is played."""
    inner = action[action.index("[") + 1 : -1]
    if action.startswith("answer["):
        return _pick(rng, (f"The passages I retrieved give the answer: {inner}.",
                           f"From the search results, the answer is {inner}."))  # fmt: skip
    if searches_done == 0:
        return _pick(rng, (f"I do not know this yet. I search for {inner}.",
                           f"I need facts first; a search for {inner} should find them."))  # fmt: skip
    return _pick(rng, (f"The results point further; next I need to know about {inner}.",
                       f"That passage names the next thing to look up: {inner}."))  # fmt: skip
