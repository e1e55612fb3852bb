"""A full-knowledge expert for ALFWorld games, reading the engine's PDDL state (the role of ALFWorld's hand-coded
text expert).

The engine's own planner (fast-downward, `PddlState.replan`) searches blind over every receptacle; in full-size
ALFRED rooms (20-50 receptacles, 30-60 objects) one plan takes tens of seconds to minutes. The tasks, though, are
fixed recipes: fetch an object of the goal's class (opening its container if needed), clean / heat / cool it at
the sink basin / microwave / fridge, and put it in a receptacle of the goal's class (twice, in one receptacle, for
pick-two), or carry it to a lamp and switch the lamp on. This module follows that recipe from any state, with
every command one the engine admits (a precondition of the domain's actions is checked for each step), so the
plan is a shortest one up to the choice of which object instance to fetch.

The goal is read from the game's PDDL goal, so built-in and released games are handled alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# Goal-formula markers, as ALFWorld's goal library writes them (lower-cased by the engine's parser).
_STATE_PREDICATES = {"isclean": "clean", "ishot": "heat", "iscool": "cool"}
_APPLIANCE = {"clean": "sinkbasintype", "heat": "microwavetype", "cool": "fridgetype"}


@dataclass(frozen=True)
class GoalSpec:
    obj_type: str  # e.g. "mugtype"
    parent_type: str  # "" for look-at-in-light goals
    toggle_type: str  # "" unless look-at-in-light
    treatment: str  # "", "clean", "heat" or "cool"
    count: int  # objects that must end up in one receptacle of parent_type (2 for pick-two)


def parse_goal(pddl_problem: str) -> GoalSpec:
    """The goal's classes from a game's PDDL problem (its `(:goal ...)` part)."""
    start = pddl_problem.lower().find("(:goal")
    if start < 0:
        raise ValueError("PDDL problem has no (:goal ...) section")
    goal = pddl_problem[start:].lower()
    types = dict(re.findall(r"\(objecttype \?(\w+) (\w+)\)", goal))
    parents = re.findall(r"\(receptacletype \?\w+ (\w+)\)", goal)
    obj = types.get("o") or types.get("o1")
    if obj is None:
        raise ValueError(f"cannot find the goal object's type in {goal[:200]!r}")
    treatment = next((t for p, t in _STATE_PREDICATES.items() if f"({p} ?o)" in goal), "")
    return GoalSpec(obj, parents[0] if parents else "", types.get("ot", ""), treatment, 2 if "?o2" in goal else 1)


@dataclass
class _World:
    """The facts the recipe needs, as a small mutable model the planner steps forward."""

    at: str  # agent location
    holding: str | None
    inside: dict[str, str]  # object -> receptacle
    where: dict[str, str]  # receptacle -> location
    rtype: dict[str, str]
    otype: dict[str, str]
    openable: set[str]
    opened: set[str]
    treated: dict[str, set[str]] = field(default_factory=dict)  # object -> {"clean", "heat", "cool"}
    toggled: set[str] = field(default_factory=set)
    can_contain: set[tuple[str, str]] = field(default_factory=set)  # (rtype, otype)


def _world(facts: Any) -> _World:
    by_name: dict[str, list[list[str]]] = {}
    for fact in facts:
        by_name.setdefault(fact.name, []).append([v.name for v in fact.arguments])
    treated: dict[str, set[str]] = {}
    for pred, kind in _STATE_PREDICATES.items():
        for (o,) in by_name.get(pred, []):
            treated.setdefault(o, set()).add(kind)
    holds = by_name.get("holds", [])
    return _World(
        at=by_name["atlocation"][0][1],
        holding=holds[0][1] if holds else None,
        inside={o: r for o, r in by_name.get("inreceptacle", [])},
        where={r: loc for r, loc in by_name.get("receptacleatlocation", [])},
        rtype={r: t for r, t in by_name.get("receptacletype", [])},
        otype={o: t for o, t in by_name.get("objecttype", [])},
        openable={r for (r,) in by_name.get("openable", [])},
        opened={r for (r,) in by_name.get("opened", [])},
        treated=treated,
        toggled={o for (o,) in by_name.get("istoggled", [])},
        can_contain={(r, o) for r, o in by_name.get("cancontain", [])},
    )


class _Recipe:
    """Emits commands while updating the world model, so each command's preconditions can be asserted."""

    def __init__(self, world: _World, names: dict[str, str], put_template: str) -> None:
        self.w, self.names, self.commands, self.put_template = world, names, [], put_template

    def say(self, template: str, *entities: str) -> None:
        self.commands.append(template.format(*(self.names[e] for e in entities)))

    def go(self, recep: str) -> None:
        if self.w.at != self.w.where[recep]:
            self.say("go to {}", recep)
            self.w.at = self.w.where[recep]

    def open(self, recep: str) -> None:
        if recep in self.w.openable and recep not in self.w.opened:
            self.say("open {}", recep)
            self.w.opened.add(recep)

    def take(self, obj: str) -> None:
        recep = self.w.inside.pop(obj)
        self.go(recep)
        self.open(recep)
        self.say("take {} from {}", obj, recep)
        self.w.holding = obj

    def put(self, recep: str) -> None:
        obj = self.w.holding
        assert obj is not None and (self.w.rtype[recep], self.w.otype[obj]) in self.w.can_contain
        self.go(recep)
        self.open(recep)
        self.commands.append(self.put_template.format(o=self.names[obj], r=self.names[recep]))
        self.w.inside[obj], self.w.holding = recep, None

    def treat(self, kind: str) -> None:
        obj = self.w.holding
        appliance = sorted(r for r, t in self.w.rtype.items() if t == _APPLIANCE[kind])[0]
        self.go(appliance)
        self.say(f"{kind} {{}} with {{}}", obj, appliance)
        self.w.treated.setdefault(obj, set()).add(kind)


def _done(w: _World, goal: GoalSpec, obj: str) -> bool:
    """Whether `obj` already counts toward the goal (right class, treated, inside a goal receptacle)."""
    return (
        w.otype.get(obj) == goal.obj_type
        and (not goal.treatment or goal.treatment in w.treated.get(obj, set()))
        and obj in w.inside
        and w.rtype[w.inside[obj]] == goal.parent_type
    )


def _fetch_order(w: _World, goal: GoalSpec, skip: set[str]) -> list[str]:
    """Candidate target objects, the ones in open places first (no "open" needed), then by name."""
    cands = [o for o, t in w.otype.items() if t == goal.obj_type and o in w.inside and o not in skip]
    return sorted(cands, key=lambda o: (w.inside[o] in w.openable and w.inside[o] not in w.opened, o))


def _free_hands(r: _Recipe, goal: GoalSpec) -> None:
    """Put a held object that is not a target down in the first open receptacle that takes it."""
    w = r.w
    if w.holding is None or w.otype[w.holding] == goal.obj_type:
        return
    ok = sorted(x for x in w.rtype if (w.rtype[x], w.otype[w.holding]) in w.can_contain and x not in w.openable)
    r.put(ok[0] if ok else sorted(x for x in w.rtype if (w.rtype[x], w.otype[w.holding]) in w.can_contain)[0])


def _look_plan(r: _Recipe, goal: GoalSpec) -> None:
    w = r.w
    if w.holding is None:
        r.take(_fetch_order(w, goal, set())[0])
    lamp = sorted(o for o, t in w.otype.items() if t == goal.toggle_type)[0]
    r.go(w.inside[lamp])
    if lamp not in w.toggled:
        r.say("use {}", lamp)
        w.toggled.add(lamp)


def _place_plan(r: _Recipe, goal: GoalSpec) -> None:
    w = r.w
    parents = sorted(x for x, t in w.rtype.items() if t == goal.parent_type)
    # The receptacle to fill: one that already holds finished objects, if any.
    filled = {x: sum(_done(w, goal, o) and w.inside[o] == x for o in w.inside) for x in parents}
    target = max(parents, key=lambda x: (filled[x], -parents.index(x)))
    missing = goal.count - filled[target]
    placed: set[str] = {o for o in w.inside if _done(w, goal, o) and w.inside[o] == target}
    for _ in range(missing):
        if w.holding is None:
            r.take(_fetch_order(w, goal, placed)[0])
        if goal.treatment and goal.treatment not in w.treated.get(w.holding, set()):
            r.treat(goal.treatment)
        placed.add(w.holding)
        r.put(target)


def expert_commands(
    facts: Any, names: dict[str, str], goal: GoalSpec, won: bool, put_template: str = "move {o} to {r}"
) -> list[str]:
    """The recipe's command sequence from the state `facts` (engine entity names mapped to display `names`).

    `put_template` is the game grammar's PutObject command: "move {o} to {r}" since ALFWorld 0.4's 2024 command
    change, "put {o} in/on {r}" in game files written before it.
    """
    if won:
        return []
    recipe = _Recipe(_world(facts), names, put_template)
    _free_hands(recipe, goal)
    (_look_plan if goal.toggle_type else _place_plan)(recipe, goal)
    return recipe.commands
