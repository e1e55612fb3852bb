"""Distributions of the built-in ALFWorld games next to the real split's figures derivable from the alfworld package.

    python scripts/env_stats.py --games 300            # built-in train / valid_unseen, default difficulty
    python scripts/env_stats.py --alfworld-data DIR     # also the released games under DIR/json_2.1.1/

Receptacles and objects are counted in the generated PDDL problems; the expert plan length is the recipe expert's
(`alfworld_expert`) from the initial state, computed without starting the engine. The real figures: receptacles per
floor plan from the package's layout files, pickupable classes per floor plan, and the released splits' task-type
counts (ALFWorld paper, Table 1).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import Counter
from types import SimpleNamespace

from trl_sdar.envs.alfworld_expert import expert_commands, parse_goal
from trl_sdar.envs.alfworld_floorplans import all_floor_plan_numbers, layout_receptacle_counts, load_floor_plan
from trl_sdar.envs.alfworld_games import DEFAULT, EASY, REAL_TASK_TYPE_COUNTS, TASK_TYPES, generate_game


def initial_facts(pddl_problem: str) -> list:
    init = pddl_problem[pddl_problem.index("(:init") : pddl_problem.index("(:goal")].lower()
    facts = []
    for name, args in re.findall(r"\((\w+) ([^()]*)\)", init):
        facts.append(SimpleNamespace(name=name, arguments=[SimpleNamespace(name=a) for a in args.split()]))
    return facts


def plan_length(game) -> int:
    facts = initial_facts(game.pddl_problem)
    names = {a.name: a.name for f in facts for a in f.arguments}
    return len(expert_commands(facts, names, parse_goal(game.pddl_problem), False))


def problem_counts(pddl_problem: str) -> tuple[int, int]:
    """(receptacles, objects) declared in a PDDL problem."""
    objects = pddl_problem[: pddl_problem.index("(:init")]
    return len(re.findall(r"\s- receptacle\b", objects)), len(re.findall(r"\s- object\b", objects))


def real_split_stats(root: str, split: str) -> None:
    """Receptacles, objects and recipe plan lengths of the released games AlfredTWEnv would play."""
    from trl_sdar.envs.alfworld import list_real_games, real_task

    recs, objs, plans = [], [], []
    for i, path in enumerate(list_real_games(root, split)):
        problem = json.loads(path.read_text())["pddl_problem"]
        r, o = problem_counts(problem)
        recs.append(r)
        objs.append(o)
        facts = initial_facts(problem)
        names = {a.name: a.name for f in facts for a in f.arguments}
        try:
            plans.append(len(expert_commands(facts, names, parse_goal(problem), False)))
        except (KeyError, IndexError, AssertionError, ValueError):
            print(f"  recipe does not cover {real_task(path, i, split).info['gamefile']}")
    print(f"## real {split}, {len(recs)} games")
    print(f"receptacles: {describe(recs)}")
    print(f"objects: {describe(objs)}")
    if plans:
        print(f"expert plan length: {describe(plans)}")


def describe(values: list[int]) -> str:
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    quartiles = f"q1 {q[0]:.0f} / median {q[1]:.0f} / q3 {q[2]:.0f}"
    return f"min {min(values)} / {quartiles} / max {max(values)} / mean {statistics.mean(values):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=300)
    parser.add_argument("--difficulty", choices=["default", "easy"], default="default")
    parser.add_argument("--alfworld-data", default=None, help="folder holding json_2.1.1/ (released games)")
    args = parser.parse_args()
    if args.alfworld_data:
        for split in ("train", "valid_seen", "valid_unseen"):
            real_split_stats(args.alfworld_data, split)
    difficulty = DEFAULT if args.difficulty == "default" else EASY
    print("## real (from the alfworld package)")
    for room, counts in layout_receptacle_counts().items():
        print(f"receptacles per floor plan, {room}: {describe(counts)}")
    for room in ("kitchen", "livingroom", "bedroom", "bathroom"):
        classes = [
            len(load_floor_plan(n).object_classes) for n in all_floor_plan_numbers() if load_floor_plan(n).room == room
        ]
        print(f"pickupable classes per floor plan, {room}: {describe(classes)}")
    for split, counts in REAL_TASK_TYPE_COUNTS.items():
        print(f"task types {split}: " + ", ".join(f"{t} {c}" for t, c in zip(TASK_TYPES, counts)))
    for split in ("train", "valid_unseen"):
        games = [generate_game(i, difficulty, split) for i in range(args.games)]
        print(f"## built-in {split}, {args.difficulty}, {len(games)} games")
        for room in ("kitchen", "livingroom", "bedroom", "bathroom"):
            rs = [len(g.receptacles) for g in games if g.room == room]
            if rs:
                print(f"receptacles, {room} ({len(rs)} games): {describe(rs)}")
        print(f"objects: {describe([len(g.objects) for g in games])}")
        same = [sum(o.lower() == g.object_target for o in g.objects) for g in games]
        print(f"objects of the target's class: {describe(same)}")
        print(f"expert plan length: {describe([plan_length(g) for g in games])}")
        for task_type, n in sorted(Counter(g.task_type for g in games).items()):
            lengths = [plan_length(g) for g in games if g.task_type == task_type]
            print(f"  {task_type}: {n} games, plan length mean {statistics.mean(lengths):.1f}")
        print(f"floor plans used: {len({g.floor_plan for g in games})}")


if __name__ == "__main__":
    main()
