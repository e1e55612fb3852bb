"""A demonstrator that searches: the ALFWorld expert without its knowledge of where the objects are.

The expert (`AlfworldEnv.expert_plan`) reads the game state, so it walks straight to the receptacle that holds the
object it needs. An agent sees only the room's receptacles and what each observation shows; a model trained on the
expert's episodes learns to walk to one plausible place and act as if the object were there. With `demo_search`
the demonstrations fetch objects the way the agent can: visit the receptacles in the order the game lists its
commands (alphabetical), skipping those of the goal's class (the object to move never starts in one), open each
closed one, and follow the expert again once the object is in view. A search restarts after every object taken.
Everything that is not a fetch (carrying, cleaning, heating, cooling, the lamp) is the expert's plan.
"""

from __future__ import annotations

from collections.abc import Sequence

from trl_sdar.commands.sft.rationale import entity_class, parse_alfworld_command


def fetch_source(plan: Sequence[str]) -> str | None:
    """The receptacle the plan's next object comes from, when its next move is a fetch, else None.

    A fetch is `take O from R`, possibly after `go to R` and/or `open R`.
    """
    for index, command in enumerate(plan[:3]):
        verb, _, source = parse_alfworld_command(command)
        if verb == "take":
            return source if all(c in (f"go to {source}", f"open {source}") for c in plan[:index]) else None
    return None


def search_move(plan: Sequence[str], admissible: Sequence[str], here: str | None, visited: set[str],
                goal_class: str) -> str | None:  # fmt: skip
    """The search command to play instead of the plan's first one, or None to follow the plan.

    `here`: the receptacle the agent stands at (None before its first `go to`); `visited`: receptacles already
    searched for the object being fetched; `goal_class`: the class of the goal's receptacle (e.g. `drawer`).
    """
    source = fetch_source(plan)
    if source is None or plan[0].startswith("take "):  # not fetching, or the object is in view
        return None
    if here is not None and f"open {here}" in admissible:  # a closed receptacle: look inside first
        return None if here == source else f"open {here}"
    places = sorted(a[len("go to ") :] for a in admissible if a.startswith("go to "))
    unsearched = [p for p in places if p not in visited and p != here and entity_class(p) != goal_class]
    if not unsearched or unsearched[0] == source:  # the sweep arrives where the expert goes
        return None
    return f"go to {unsearched[0]}"
