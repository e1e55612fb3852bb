"""Generator of ALFRED-style PDDL games for the real ALFWorld text engine.

The `alfworld` package ships the engine's logic (PDDL domain `alfworld/data/alfred.pddl`, text grammar
`alfworld/data/alfred.twl2`, goal formulas and goal sentences in `alfworld.gen.goal_library`, object/receptacle
affordances in `alfworld.gen.constants`) but no games. A game is a JSON file (`game.tw-pddl`) holding that domain,
the grammar with "UNKNOWN GOAL" replaced by the goal sentence, and a PDDL problem (objects, initial facts, goal).
This module writes such problems from a seeded RNG: the same (task id, split, difficulty) always gives the same
room, objects, goal and file. Everything here is pure except `write_game_file`.

The rooms are ALFRED's floor plans as the package ships them (`alfworld_floorplans`): their receptacles, their
object classes with 1-3 instances each placed where ALFRED's placement table allows (so the target's class has
look-alikes all over the room), the real split's task-type mix, and ALFRED's valid_unseen rooms held out for the
valid_unseen split.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import alfworld.gen.constants as alfred_constants
import alfworld.gen.goal_library as alfred_goals
from alfworld.info import ALFRED_PDDL_PATH, ALFRED_TWL2_PATH

from trl_sdar.envs.alfworld_floorplans import FloorPlan, Receptacle, load_floor_plan, room_of, split_floor_plans

# Bump when the generated worlds change, so stale cache files are never reused.
GENERATOR_VERSION = 2

TASK_TYPES: tuple[str, ...] = (
    "pick_and_place_simple",
    "pick_two_obj_and_place",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
)
SPLITS: tuple[str, ...] = ("train", "valid_seen", "valid_unseen")
# Games per task type in ALFWorld's released splits (the six types AlfredTWEnv plays; ALFWorld paper, Table 1):
# built-in ids of a split follow the same mix.
REAL_TASK_TYPE_COUNTS: dict[str, tuple[int, ...]] = {
    "train": (790, 813, 308, 650, 459, 533),
    "valid_seen": (35, 24, 13, 27, 16, 25),
    "valid_unseen": (24, 17, 18, 31, 23, 21),
}
# Room kinds each task type is sampled in (ALFRED's own table, keyed by its room names).
_ROOM_NAMES = {"Kitchen": "kitchen", "LivingRoom": "livingroom", "Bedroom": "bedroom", "Bathroom": "bathroom"}
_TASK_ROOMS = {t: frozenset(_ROOM_NAMES[r] for r in alfred_constants.GOALS_VALID[t]) for t in TASK_TYPES}
# Receptacles a lamp stands on when the room has one; otherwise any open receptacle.
_LAMP_HOLDERS = ("SideTable", "Desk", "Dresser", "CoffeeTable", "DiningTable", "TVStand", "Shelf")
# The appliance a task type uses; it is never the place the object must end up in.
_TASK_APPLIANCE = {
    "pick_clean_then_place_in_recep": "SinkBasin",
    "pick_heat_then_place_in_recep": "Microwave",
    "pick_cool_then_place_in_recep": "Fridge",
}
_TASK_PROPERTY = {
    "pick_clean_then_place_in_recep": "Cleanable",
    "pick_heat_then_place_in_recep": "Heatable",
    "pick_cool_then_place_in_recep": "Coolable",
}
# Types the domain's preconditions name as constants; the problem must declare them.
_DOMAIN_RTYPES = ("SinkBasin", "Microwave", "Fridge")
_DOMAIN_OTYPES = ("Knife", "ButterKnife")
_GOLDEN = 0.6180339887498949


@dataclass(frozen=True)
class AlfworldDifficulty:
    """Knobs of the generated worlds; the default is the full ALFRED room, as in the real games.

    max_receptacles: keep at most this many of the floor plan's receptacles (None: all of them). The ones the task
        needs (goal receptacle, appliance, a lamp holder, a starting place of the object) are always kept.
    max_repeats: each object class present gets 1..max_repeats instances (ALFRED spawns up to 3).
    max_object_classes: keep at most this many of the floor plan's object classes, the target's included
        (None: all of them).
    """

    max_receptacles: int | None = None
    max_repeats: int = alfred_constants.MAX_NUM_OF_OBJ_INSTANCES
    max_object_classes: int | None = None

    def __post_init__(self) -> None:
        if self.max_receptacles is not None and self.max_receptacles < 4:
            raise ValueError(f"max_receptacles must be None or >= 4, got {self.max_receptacles}")
        if self.max_repeats < 1:
            raise ValueError(f"max_repeats must be >= 1, got {self.max_repeats}")
        if self.max_object_classes is not None and self.max_object_classes < 1:
            raise ValueError(f"max_object_classes must be None or >= 1, got {self.max_object_classes}")

    @property
    def key(self) -> str:
        """Short id of these settings, used in cache paths."""
        r = "all" if self.max_receptacles is None else self.max_receptacles
        o = "all" if self.max_object_classes is None else self.max_object_classes
        return f"v{GENERATOR_VERSION}-r{r}-x{self.max_repeats}-o{o}"


TINY = AlfworldDifficulty(max_receptacles=4, max_repeats=1, max_object_classes=3)
EASY = AlfworldDifficulty(max_receptacles=8, max_repeats=1, max_object_classes=6)
DEFAULT = AlfworldDifficulty()
# The `env_difficulty` names of recipes and `trl-sdar eval --env-difficulty`.
DIFFICULTY_LEVELS = {"tiny": TINY, "easy": EASY, "default": DEFAULT}


@dataclass(frozen=True)
class GeneratedGame:
    """One generated task: what the agent is told and the PDDL problem the engine plays."""

    task_id: int
    split: str
    task_type: str
    room: str
    floor_plan: int  # the ALFRED floor plan the room is
    instruction: str  # the goal sentence, e.g. "put a clean mug in coffeemachine."
    object_target: str  # lower-case ALFRED class names, as they appear in the goal sentence
    parent_target: str
    toggle_target: str
    receptacles: tuple[str, ...]  # receptacle class of each receptacle in the room (with repeats)
    objects: tuple[str, ...]  # class of each object in the room (with repeats)
    pddl_problem: str


def task_type_for(task_id: int, split: str = "train") -> str:
    """The task type of a built-in task id, following the real split's mix over any range of ids.

    Ids are spread over [0, 1) by the golden-ratio sequence and binned by the split's cumulative type shares, so
    every window of consecutive ids has close to the real proportions (and the assignment needs no RNG).
    """
    counts = REAL_TASK_TYPE_COUNTS[SPLITS[_split_index(split)]]
    u = (task_id * _GOLDEN + 0.5) % 1.0
    total, cumulative = sum(counts), 0
    for task_type, count in zip(TASK_TYPES, counts):
        cumulative += count
        if u < cumulative / total:
            return task_type
    return TASK_TYPES[-1]


def _can_contain(receptacle: str, obj: str) -> bool:
    return obj in alfred_constants.VAL_RECEPTACLE_OBJECTS.get(receptacle, ())


def _has_property(obj: str, prop: str) -> bool:
    return obj in alfred_constants.VAL_ACTION_OBJECTS[prop]


@dataclass(frozen=True)
class _Goal:
    obj: str
    parent: str  # "" for look_at_obj_in_light
    toggle: str  # "" unless look_at_obj_in_light


def _choose_goal(rng: random.Random, task_type: str, plan: FloorPlan) -> _Goal | None:
    """Pick the goal's classes among what the floor plan holds, or None if it cannot host the task."""
    if task_type == "look_at_obj_in_light" and not plan.lamps:
        return None
    appliance = _TASK_APPLIANCE.get(task_type)
    if appliance is not None and appliance not in plan.receptacle_classes:
        return None
    candidates = list(plan.object_classes)
    if task_type in _TASK_PROPERTY:
        candidates = [o for o in candidates if _has_property(o, _TASK_PROPERTY[task_type])]
    rng.shuffle(candidates)
    present = sorted(plan.receptacle_classes)
    for obj in candidates:
        starts = [r for r in present if _can_contain(r, obj)]
        if task_type == "look_at_obj_in_light":
            if starts:
                return _Goal(obj, "", rng.choice(plan.lamps))
            continue
        parents = [r for r in starts if r != _TASK_APPLIANCE.get(task_type)]
        rng.shuffle(parents)
        for parent in parents:
            # The object must start somewhere else, otherwise the task is (nearly) done before it begins.
            if any(r != parent for r in starts):
                return _Goal(obj, parent, "")
    return None


def _room_receptacles(rng: random.Random, plan: FloorPlan, goal: _Goal, difficulty: AlfworldDifficulty) -> list:
    """The floor plan's receptacles, cut down to `max_receptacles` keeping one of each class the task needs."""
    receptacles = list(plan.receptacles)
    cap = difficulty.max_receptacles
    if cap is None or len(receptacles) <= cap:
        return receptacles
    order = list(range(len(receptacles)))
    rng.shuffle(order)
    needed = {goal.parent, *_TASK_APPLIANCE.values()} - {""}
    if goal.toggle:
        needed.add(next((h for h in _LAMP_HOLDERS if h in plan.receptacle_classes), ""))
    keep: list[int] = []
    for cls in sorted(needed):
        keep += [i for i in order if receptacles[i].cls == cls][:1]
    start = [i for i in order if _can_contain(receptacles[i].cls, goal.obj) and receptacles[i].cls != goal.parent]
    if not any(i in keep for i in start):
        keep.append(start[0])
    keep += [i for i in order if i not in keep][: max(cap - len(keep), 0)]
    return [receptacles[i] for i in sorted(keep)]


def _place_objects(
    rng: random.Random, task_type: str, receptacles: list[Receptacle], goal: _Goal, classes: list[str], repeats: int
) -> list[tuple[str, int, bool]]:
    """(class, receptacle index, pickupable) of every object: 1..`repeats` of each class, as ALFRED spawns them.

    The target never starts in a receptacle of the goal's class; a class no receptacle of the room can hold is
    left out.
    """
    placed: list[tuple[str, int, bool]] = []
    for cls in classes:
        n = rng.randint(1, repeats)
        if cls == goal.obj and task_type == "pick_two_obj_and_place":
            n = max(n, 2)
        avoid = goal.parent if cls == goal.obj else None
        spots = [i for i, r in enumerate(receptacles) if _can_contain(r.cls, cls) and r.cls != avoid]
        placed += [(cls, rng.choice(spots), True) for _ in range(n if spots else 0)]
    if goal.toggle:
        holders = [i for i, r in enumerate(receptacles) if r.cls in _LAMP_HOLDERS]
        opened = [i for i, r in enumerate(receptacles) if r.cls not in alfred_constants.OPENABLE_CLASS_SET]
        placed.append((goal.toggle, rng.choice(holders or opened), False))
    return placed


def _object_classes(rng: random.Random, plan: FloorPlan, goal: _Goal, cap: int | None) -> list[str]:
    """The floor plan's object classes (target first), cut down to `cap` at random."""
    others = [c for c in plan.object_classes if c != goal.obj]
    if cap is not None and len(others) > cap - 1:
        others = sorted(rng.sample(others, cap - 1))
    return [goal.obj, *others]


def _random_coords(rng: random.Random, used: set[tuple[str, ...]]) -> tuple[str, str, str]:
    """A THOR-style position ("+01.25", "-00.30", ...) not used yet: ALFRED ids carry the object's position."""
    while True:
        coords = tuple(f"{'+' if (v := rng.uniform(-3.0, 3.0)) >= 0 else '-'}{abs(v):05.2f}" for _ in range(3))
        if coords not in used:
            used.add(coords)
            return coords


def _mangle(value: str) -> str:
    """ALFRED's PDDL spelling of an id part ("+01.25" -> "_plus_01_dot_25", "|" -> "_bar_")."""
    return value.replace("|", "_bar_").replace("+", "_plus_").replace("-", "_minus_").replace(".", "_dot_")


def _receptacle_id(receptacle: Receptacle) -> str:
    # Sink and bathtub basins are sub-objects in ALFRED ("Sink|...|SinkBasin"); the engine's name demangler
    # relies on that form to print "sinkbasin 1".
    coords = _mangle("|".join(receptacle.coords))
    if receptacle.cls in ("SinkBasin", "BathtubBasin"):
        return f"{receptacle.cls[: -len('Basin')]}_bar_{coords}_bar_{receptacle.cls}"
    return f"{receptacle.cls}_bar_{coords}"


def _location(index: int) -> str:
    return f"loc_bar_{index}_bar_{index % 7}_bar_{index % 4}_bar_{30 if index % 2 else 45}"


def _object_facts(oid: str, cls: str, recep_id: str, loc: str, *, pickupable: bool) -> list[str]:
    facts = [f"(objectType {oid} {cls}Type)", f"(objectAtLocation {oid} {loc})", f"(inReceptacle {oid} {recep_id})"]
    if pickupable:
        facts.append(f"(pickupable {oid})")
    for prop, predicate in (("Cleanable", "cleanable"), ("Heatable", "heatable"), ("Coolable", "coolable")):
        if _has_property(cls, prop):
            facts.append(f"({predicate} {oid})")
    if _has_property(cls, "Sliceable"):
        facts.append(f"(sliceable {oid})")
    if _has_property(cls, "Toggleable"):
        facts.append(f"(toggleable {oid})")
    return facts


def _problem_text(
    rng: random.Random, receptacles: list[Receptacle], objects: list[tuple[str, int, bool]], goal: str
) -> str:
    """Render the PDDL problem. `objects` holds (class, receptacle index, pickupable).

    Receptacles keep their THOR ids; each gets its own location (ALFRED's poses can be shared by neighbouring
    drawers, which the text game would then reach with one "go to"), objects get made-up positions.
    """
    used = {r.coords for r in receptacles}
    recep_ids = [_receptacle_id(r) for r in receptacles]
    locs = [_location(i + 1) for i in range(len(receptacles))]
    classes = [r.cls for r in receptacles]
    decls, init = ["agent1 - agent"], [f"(atLocation agent1 {_location(0)})"]
    otypes = sorted({cls for cls, _, _ in objects} | set(_DOMAIN_OTYPES))
    rtypes = sorted(set(classes) | set(_DOMAIN_RTYPES))
    decls += [f"{t}Type - otype" for t in otypes] + [f"{t}Type - rtype" for t in rtypes]
    for cls, rid, loc in zip(classes, recep_ids, locs):
        decls.append(f"{rid} - receptacle")
        init += [f"(receptacleType {rid} {cls}Type)", f"(receptacleAtLocation {rid} {loc})"]
        if cls in alfred_constants.OPENABLE_CLASS_SET:
            init.append(f"(openable {rid})")
    for cls, where, pickupable in objects:
        oid = f"{cls}_bar_{_mangle('|'.join(_random_coords(rng, used)))}"
        decls.append(f"{oid} - object")
        init += _object_facts(oid, cls, recep_ids[where], locs[where], pickupable=pickupable)
    decls += [f"{loc} - location" for loc in [_location(0), *locs]]
    init += [f"(canContain {r}Type {o}Type)" for r in rtypes for o in otypes if _can_contain(r, o)]
    lines = ["(define (problem plan_trial)", "    (:domain alfred)", "    (:objects"]
    lines += [f"        {d}" for d in decls] + ["    )", "    (:init"] + [f"        {f}" for f in init] + ["    )"]
    return "\n".join(lines) + "\n" + goal


def _goal_pddl(task_type: str, obj: str, parent: str, toggle: str) -> str:
    # The goal library writes types with '#' (its strings pass through str.format) and closes the problem's
    # "(define" with its last parenthesis.
    template = alfred_goals.gdict[task_type]["pddl"].replace("#", "-")
    return template.format(obj=obj, recep=parent, toggle=toggle, mrecep="")


def _split_index(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return SPLITS.index(split)


def _draw_room(rng: random.Random, task_type: str, split: str) -> tuple[FloorPlan, _Goal]:
    """A floor plan of the split that can host the task type, and the goal's classes in it."""
    pool = [n for n in split_floor_plans(split) if room_of(n) in _TASK_ROOMS[task_type]]
    while True:  # a few floor plans cannot host a task (no lamp, no valid goal receptacle); draw another then
        plan = load_floor_plan(rng.choice(pool))
        goal = _choose_goal(rng, task_type, plan)
        if goal is not None:
            return plan, goal


def generate_game(task_id: int, difficulty: AlfworldDifficulty = DEFAULT, split: str = "train") -> GeneratedGame:
    """Generate built-in task `task_id` (deterministic). valid_unseen uses floor plans the other splits never do."""
    if task_id < 0:
        raise ValueError(f"task_id must be >= 0, got {task_id}")
    task_type = task_type_for(task_id, split)
    # A tuple seed would hash by PYTHONHASHSEED; an integer seed is stable across processes.
    rng = random.Random(task_id * 7919 + _split_index(split) * 1_000_003 + 17)
    plan, goal = _draw_room(rng, task_type, split)
    # The task (room, goal, sentence) is drawn before the difficulty knobs shape the room, so it is the same task
    # at every difficulty.
    sentence = rng.choice(alfred_goals.gdict[task_type]["templates"])
    sentence = sentence.format(obj=goal.obj.lower(), recep=goal.parent.lower(), toggle=goal.toggle.lower(), mrecep="")
    receptacles = _room_receptacles(rng, plan, goal, difficulty)
    classes = _object_classes(rng, plan, goal, difficulty.max_object_classes)
    placed = _place_objects(rng, task_type, receptacles, goal, classes, difficulty.max_repeats)
    problem = _problem_text(rng, receptacles, placed, _goal_pddl(task_type, goal.obj, goal.parent, goal.toggle))
    return GeneratedGame(
        task_id=task_id,
        split=split,
        task_type=task_type,
        room=plan.room,
        floor_plan=plan.number,
        instruction=sentence + ".",
        object_target=goal.obj.lower(),
        parent_target=goal.parent.lower(),
        toggle_target=goal.toggle.lower(),
        receptacles=tuple(r.cls for r in receptacles),
        objects=tuple(cls for cls, _, _ in placed),
        pddl_problem=problem,
    )


@lru_cache(maxsize=1)
def engine_logic() -> tuple[str, str]:
    """(PDDL domain, text grammar) shipped in the alfworld package."""
    return Path(ALFRED_PDDL_PATH).read_text(), Path(ALFRED_TWL2_PATH).read_text()


def game_file_data(game: GeneratedGame) -> dict:
    """The `game.tw-pddl` content for a generated game, in the layout ALFWorld's own game files use."""
    domain, grammar = engine_logic()
    # The grammar already ends the task line with "."; the goal sentence goes in without its final dot.
    return {
        "pddl_domain": domain,
        "grammar": grammar.replace("UNKNOWN GOAL", game.instruction.rstrip(".")),
        "pddl_problem": game.pddl_problem,
        "solvable": True,
    }


def game_file_path(root: str | os.PathLike, game: GeneratedGame, difficulty: AlfworldDifficulty) -> Path:
    """Where a generated game lives under a cache root. The task-type name is part of the path (skills use it)."""
    return Path(root) / difficulty.key / game.split / game.task_type / f"task_{game.task_id:07d}" / "game.tw-pddl"


def write_game_file(root: str | os.PathLike, game: GeneratedGame, difficulty: AlfworldDifficulty) -> Path:
    """Write the game file once; concurrent writers are safe (atomic rename of a complete temp file)."""
    path = game_file_path(root, game, difficulty)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(game_file_data(game), f)
    os.replace(tmp, path)
    return path
