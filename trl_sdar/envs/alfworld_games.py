"""Generator of ALFRED-style PDDL games for the real ALFWorld text engine.

The `alfworld` package ships the engine's logic (PDDL domain `alfworld/data/alfred.pddl`, text grammar
`alfworld/data/alfred.twl2`, goal formulas and goal sentences in `alfworld.gen.goal_library`, object/receptacle
affordances in `alfworld.gen.constants`) but no games. A game is a JSON file (`game.tw-pddl`) holding that domain,
the grammar with "UNKNOWN GOAL" replaced by the goal sentence, and a PDDL problem (objects, initial facts, goal).
This module writes such problems from a seeded RNG: the same (task id, split, difficulty) always gives the same
room, objects, goal and file. Everything here is pure except `write_game_file`.
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

# Bump when the generated worlds change, so stale cache files are never reused.
GENERATOR_VERSION = 1

TASK_TYPES: tuple[str, ...] = (
    "pick_and_place_simple",
    "pick_two_obj_and_place",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
)
SPLITS: tuple[str, ...] = ("train", "valid_seen", "valid_unseen")

# Rooms each task type can happen in (as in ALFRED: heating and cooling need a kitchen, lamps a bed/living room).
_TASK_ROOMS = {
    "pick_and_place_simple": ("kitchen", "bathroom", "bedroom", "livingroom"),
    "pick_two_obj_and_place": ("kitchen", "bathroom", "bedroom", "livingroom"),
    "look_at_obj_in_light": ("bedroom", "livingroom"),
    "pick_clean_then_place_in_recep": ("kitchen", "bathroom"),
    "pick_heat_then_place_in_recep": ("kitchen",),
    "pick_cool_then_place_in_recep": ("kitchen",),
}
# Receptacles every room of a kind has; the appliances a task needs are among them.
_ROOM_REQUIRED = {
    "kitchen": ("Fridge", "Microwave", "SinkBasin", "CounterTop", "StoveBurner"),
    "bathroom": ("SinkBasin", "Toilet", "CounterTop"),
    "bedroom": ("Bed", "Desk", "SideTable"),
    "livingroom": ("Sofa", "CoffeeTable", "SideTable"),
}
# Open receptacles used to fill the room up to the requested size.
_ROOM_OPEN = {
    "kitchen": ("CounterTop", "DiningTable", "Shelf", "StoveBurner", "CoffeeMachine", "Toaster", "GarbageCan"),
    "bathroom": ("CounterTop", "BathtubBasin", "TowelHolder", "HandTowelHolder", "ToiletPaperHanger", "GarbageCan"),
    "bedroom": ("SideTable", "Dresser", "Shelf", "GarbageCan", "LaundryHamper", "ArmChair", "Desk"),
    "livingroom": ("ArmChair", "SideTable", "TVStand", "Shelf", "GarbageCan", "DiningTable", "Ottoman", "Dresser"),
}
# Closed containers (start closed; what is inside is hidden until opened).
_ROOM_CLOSED = {
    "kitchen": ("Cabinet", "Drawer"),
    "bathroom": ("Cabinet", "Drawer"),
    "bedroom": ("Drawer", "Safe"),
    "livingroom": ("Drawer", "Cabinet", "Safe"),
}
# Small objects that can be picked up in each room.
_ROOM_OBJECTS = {
    "kitchen": (
        "Apple", "Bread", "ButterKnife", "Bowl", "Cup", "DishSponge", "Egg", "Fork", "Kettle", "Knife", "Ladle",
        "Lettuce", "Mug", "Pan", "PepperShaker", "Plate", "Pot", "Potato", "SaltShaker", "SoapBottle", "Spatula",
        "Spoon", "Tomato", "WineBottle",
    ),
    "bathroom": (
        "Candle", "Cloth", "DishSponge", "HandTowel", "SoapBar", "SoapBottle", "SprayBottle", "TissueBox",
        "ToiletPaper", "Towel",
    ),
    "bedroom": (
        "AlarmClock", "BaseballBat", "BasketBall", "Book", "Bowl", "CD", "CellPhone", "Cloth", "CreditCard",
        "KeyChain", "Laptop", "Mug", "Pen", "Pencil", "Pillow", "TennisRacket", "Watch",
    ),
    "livingroom": (
        "Book", "Box", "Candle", "CellPhone", "CreditCard", "KeyChain", "Laptop", "Newspaper", "Pillow",
        "RemoteControl", "Statue", "TissueBox", "Vase", "Watch", "WateringCan",
    ),
}  # fmt: skip
_LAMP_HOLDERS = ("Desk", "SideTable", "Dresser")
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


@dataclass(frozen=True)
class AlfworldDifficulty:
    """Knobs of the generated worlds. Rooms always contain at least the receptacles their task needs."""

    n_receptacles: int = 10  # receptacles in the room (ALFWorld's real rooms have roughly 10-35)
    n_closed: int = 3  # closed containers (cabinets, drawers, safes) among them, besides fridge/microwave
    n_distractors: int = 5  # objects the task does not need

    def __post_init__(self) -> None:
        if self.n_receptacles < 1:
            raise ValueError(f"n_receptacles must be >= 1, got {self.n_receptacles}")
        if self.n_closed < 0:
            raise ValueError(f"n_closed must be >= 0, got {self.n_closed}")
        if self.n_distractors < 0:
            raise ValueError(f"n_distractors must be >= 0, got {self.n_distractors}")

    @property
    def key(self) -> str:
        """Short id of these settings, used in cache paths."""
        return f"v{GENERATOR_VERSION}-r{self.n_receptacles}-c{self.n_closed}-d{self.n_distractors}"


EASY = AlfworldDifficulty(n_receptacles=6, n_closed=1, n_distractors=2)
DEFAULT = AlfworldDifficulty()


@dataclass(frozen=True)
class GeneratedGame:
    """One generated task: what the agent is told and the PDDL problem the engine plays."""

    task_id: int
    split: str
    task_type: str
    room: str
    instruction: str  # the goal sentence, e.g. "put a clean mug in coffeemachine."
    object_target: str  # lower-case ALFRED class names, as they appear in the goal sentence
    parent_target: str
    toggle_target: str
    receptacles: tuple[str, ...]  # receptacle class of each receptacle in the room (with repeats)
    objects: tuple[str, ...]  # class of each object in the room (with repeats)
    pddl_problem: str


def task_type_for(task_id: int) -> str:
    """The task type of a built-in task id: ids cycle through the six types so every range covers all of them."""
    return TASK_TYPES[task_id % len(TASK_TYPES)]


def _can_contain(receptacle: str, obj: str) -> bool:
    return obj in alfred_constants.VAL_RECEPTACLE_OBJECTS.get(receptacle, ())


def _has_property(obj: str, prop: str) -> bool:
    return obj in alfred_constants.VAL_ACTION_OBJECTS[prop]


def _room_receptacles(rng: random.Random, room: str, difficulty: AlfworldDifficulty) -> list[str]:
    required = list(_ROOM_REQUIRED[room])
    free = max(difficulty.n_receptacles - len(required), 0)
    n_closed = min(difficulty.n_closed, free)
    closed = [rng.choice(_ROOM_CLOSED[room]) for _ in range(n_closed)]
    # Fill with distinct open receptacle kinds first, then repeats ("shelf 2"), like real rooms.
    pool = list(_ROOM_OPEN[room])
    rng.shuffle(pool)
    fill = [pool[i] if i < len(pool) else rng.choice(pool) for i in range(free - n_closed)]
    return required + closed + fill


def _choose_goal(rng: random.Random, task_type: str, room: str, receptacles: list[str]) -> tuple[str, str] | None:
    """Pick (target object class, target receptacle class), or None if this room cannot host the task."""
    candidates = list(_ROOM_OBJECTS[room])
    if task_type in _TASK_PROPERTY:
        candidates = [o for o in candidates if _has_property(o, _TASK_PROPERTY[task_type])]
    rng.shuffle(candidates)
    present = sorted(set(receptacles))
    for obj in candidates:
        parents = [r for r in present if _can_contain(r, obj) and r != _TASK_APPLIANCE.get(task_type)]
        rng.shuffle(parents)
        for parent in parents:
            # The object must start somewhere else, otherwise the task is (nearly) done before it begins.
            if any(_can_contain(r, obj) for r in present if r != parent):
                return obj, parent if task_type != "look_at_obj_in_light" else ""
    return None


def _place(rng: random.Random, obj: str, receptacles: list[str], avoid: str) -> int | None:
    spots = [i for i, r in enumerate(receptacles) if _can_contain(r, obj) and r != avoid]
    return rng.choice(spots) if spots else None


def _mangled_coords(rng: random.Random, used: set[str]) -> str:
    """ALFRED ids carry the object's 3-D position, mangled for PDDL ("+01.25" -> "_plus_01_dot_25")."""
    while True:
        parts = []
        for _ in range(3):
            value = rng.uniform(-3.0, 3.0)
            sign = "_plus_" if value >= 0 else "_minus_"
            parts.append(f"{sign}{abs(value):05.2f}".replace(".", "_dot_"))
        coords = "_bar_".join(parts)
        if coords not in used:
            used.add(coords)
            return coords


def _receptacle_id(cls: str, coords: str) -> str:
    # Sink and bathtub basins are sub-objects in ALFRED ("Sink|...|SinkBasin"); the engine's name demangler
    # relies on that form to print "sinkbasin 1".
    if cls in ("SinkBasin", "BathtubBasin"):
        return f"{cls[: -len('Basin')]}_bar_{coords}_bar_{cls}"
    return f"{cls}_bar_{coords}"


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


def _problem_text(rng: random.Random, receptacles: list[str], objects: list[tuple[str, int, bool]], goal: str) -> str:
    """Render the PDDL problem. `objects` holds (class, receptacle index, pickupable)."""
    used: set[str] = set()
    recep_ids = [_receptacle_id(cls, _mangled_coords(rng, used)) for cls in receptacles]
    locs = [_location(i + 1) for i in range(len(receptacles))]
    decls, init = ["agent1 - agent"], [f"(atLocation agent1 {_location(0)})"]
    otypes = sorted({cls for cls, _, _ in objects} | set(_DOMAIN_OTYPES))
    rtypes = sorted(set(receptacles) | set(_DOMAIN_RTYPES))
    decls += [f"{t}Type - otype" for t in otypes] + [f"{t}Type - rtype" for t in rtypes]
    for cls, rid, loc in zip(receptacles, recep_ids, locs):
        decls.append(f"{rid} - receptacle")
        init += [f"(receptacleType {rid} {cls}Type)", f"(receptacleAtLocation {rid} {loc})"]
        if cls in alfred_constants.OPENABLE_CLASS_SET:
            init.append(f"(openable {rid})")
    for cls, where, pickupable in objects:
        oid = f"{cls}_bar_{_mangled_coords(rng, used)}"
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


def generate_game(task_id: int, difficulty: AlfworldDifficulty = DEFAULT, split: str = "train") -> GeneratedGame:
    """Generate built-in task `task_id` (deterministic). Different splits give disjoint families of worlds."""
    if task_id < 0:
        raise ValueError(f"task_id must be >= 0, got {task_id}")
    task_type = task_type_for(task_id)
    # A tuple seed would hash by PYTHONHASHSEED; an integer seed is stable across processes.
    rng = random.Random(task_id * 7919 + _split_index(split) * 1_000_003 + 17)
    while True:  # a few rooms cannot host a task (no valid goal receptacle); draw another room then
        room = rng.choice(_TASK_ROOMS[task_type])
        receptacles = _room_receptacles(rng, room, difficulty)
        choice = _choose_goal(rng, task_type, room, receptacles)
        if choice is not None:
            break
    obj, parent = choice
    n_targets = rng.randint(2, 3) if task_type == "pick_two_obj_and_place" else rng.randint(1, 2)
    placed: list[tuple[str, int, bool]] = []
    for _ in range(n_targets):
        where = _place(rng, obj, receptacles, avoid=parent)
        assert where is not None  # _choose_goal only returns goals whose object has a starting place
        placed.append((obj, where, True))
    toggle = ""
    if task_type == "look_at_obj_in_light":
        toggle = "FloorLamp" if room == "livingroom" and rng.random() < 0.5 else "DeskLamp"
        holders = [i for i, r in enumerate(receptacles) if r in _LAMP_HOLDERS]
        placed.append((toggle, rng.choice(holders), False))
    others = [o for o in _ROOM_OBJECTS[room] if o != obj]
    for _ in range(difficulty.n_distractors):
        cls = rng.choice(others)
        where = _place(rng, cls, receptacles, avoid="")
        if where is not None:
            placed.append((cls, where, True))
    sentence = rng.choice(alfred_goals.gdict[task_type]["templates"])
    sentence = sentence.format(obj=obj.lower(), recep=parent.lower(), toggle=toggle.lower(), mrecep="")
    problem = _problem_text(rng, receptacles, placed, _goal_pddl(task_type, obj, parent, toggle))
    return GeneratedGame(
        task_id=task_id,
        split=split,
        task_type=task_type,
        room=room,
        instruction=sentence + ".",
        object_target=obj.lower(),
        parent_target=parent.lower(),
        toggle_target=toggle.lower(),
        receptacles=tuple(receptacles),
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
