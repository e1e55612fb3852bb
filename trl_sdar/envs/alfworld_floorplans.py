"""The ALFRED floor plans shipped in the `alfworld` package, read as the rooms the built-in games are set in.

For each of ALFRED's 120 AI2-THOR floor plans (kitchens 1-30, living rooms 201-230, bedrooms 301-330, bathrooms
401-430) the package ships `alfworld/gen/layouts/FloorPlan<N>-objects.json` (every object class in the scene) and
`FloorPlan<N>-openable.json` (each receptacle instance the ALFRED generator found a pose to open / put into / take
from, keyed by its THOR id "Cabinet|+00.68|+00.50|-02.20"). ALFRED's generator makes a PDDL receptacle of every
non-movable receptacle in the scene, and drops openable ones without such a pose. So a room here is:

* every receptacle instance of `openable.json` ("Sink" and "Bathtub" are the parents of the `SinkBasin` /
  `BathtubBasin` receptacles the engine uses), plus
* the non-openable receptacle classes of `objects.json` that `openable.json` misses (coffee machines, toasters,
  garbage cans, towel holders...): one instance each, four for `StoveBurner` (the package records classes, not
  burner counts; four is the common THOR stove);
* the pickupable object classes of `objects.json` (those some receptacle can hold per
  `alfworld.gen.constants.VAL_RECEPTACLE_OBJECTS`) and the lamps.

Pure functions over the package files, cached.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import alfworld.gen.constants as alfred_constants

LAYOUT_DIR = Path(alfred_constants.__file__).parent / "layouts"
ROOM_OF_RANGE = {"kitchen": range(1, 31), "livingroom": range(201, 231), "bedroom": range(301, 331),
                 "bathroom": range(401, 431)}  # fmt: skip
# The rooms of ALFRED's valid_unseen split (one per room kind); built-in training and valid_seen never use them.
UNSEEN_FLOOR_PLANS: tuple[int, ...] = (10, 219, 308, 424)
STOVE_BURNERS = 4
LAMPS = ("DeskLamp", "FloorLamp")
_PARENT_TO_BASIN = {"Sink": "SinkBasin", "Bathtub": "BathtubBasin"}
_STATIC_RECEPTACLES = frozenset(alfred_constants.RECEPTACLES) - frozenset(alfred_constants.MOVABLE_RECEPTACLES)
_RECEPTACLE_CLASSES = _STATIC_RECEPTACLES | frozenset(_PARENT_TO_BASIN)
# Classes some receptacle can hold, minus the static receptacles; sliced variants only exist after slicing.
PICKUPABLE = frozenset(
    o
    for objs in alfred_constants.VAL_RECEPTACLE_OBJECTS.values()
    for o in objs
    if o not in _STATIC_RECEPTACLES and not o.endswith("Sliced")
)


@dataclass(frozen=True)
class Receptacle:
    cls: str  # receptacle class the engine uses ("SinkBasin", not "Sink")
    coords: tuple[str, str, str]  # THOR position strings ("+00.68", "+00.50", "-02.20"), part of the PDDL id
    from_layout: bool  # listed in openable.json (else added from objects.json with made-up coordinates)


@dataclass(frozen=True)
class FloorPlan:
    number: int
    room: str  # kitchen | livingroom | bedroom | bathroom
    receptacles: tuple[Receptacle, ...]
    object_classes: tuple[str, ...]  # pickupable classes present in the scene (sorted)
    lamps: tuple[str, ...]  # DeskLamp / FloorLamp present in the scene

    @property
    def receptacle_classes(self) -> frozenset[str]:
        return frozenset(r.cls for r in self.receptacles)

    def count(self, cls: str) -> int:
        return sum(r.cls == cls for r in self.receptacles)


def room_of(number: int) -> str:
    for room, numbers in ROOM_OF_RANGE.items():
        if number in numbers:
            return room
    raise ValueError(f"floor plan {number} is not an ALFRED floor plan (1-30, 201-230, 301-330, 401-430)")


def all_floor_plan_numbers() -> tuple[int, ...]:
    return tuple(n for numbers in ROOM_OF_RANGE.values() for n in numbers)


def _synthetic_coords(cls: str, index: int) -> tuple[str, str, str]:
    # Deterministic stand-in positions for receptacles the layout file does not place; never collide with THOR's
    # (which have two decimals) because of the third decimal digit.
    seed = sum(ord(ch) for ch in cls) + 37 * index
    return tuple(f"{sign}{(seed * k) % 400 / 100:05.2f}1" for k, sign in ((3, "+"), (7, "+"), (11, "-")))


@cache
def load_floor_plan(number: int) -> FloorPlan:
    """The room of ALFRED floor plan `number`, from the package's layout files."""
    room = room_of(number)
    try:
        openable = json.loads((LAYOUT_DIR / f"FloorPlan{number}-openable.json").read_text())
        scene_classes = set(json.loads((LAYOUT_DIR / f"FloorPlan{number}-objects.json").read_text()))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"alfworld package lacks the layout files of FloorPlan{number}: {err}") from err
    receptacles = []
    for key in sorted(openable):
        # "Cabinet|x|y|z", or for basins the sub-object form "Sink|x|y|z|SinkBasin".
        cls, *coords = key.split("|")
        if cls in _RECEPTACLE_CLASSES and len(coords) >= 3:
            receptacles.append(Receptacle(_PARENT_TO_BASIN.get(cls, cls), tuple(coords[:3]), True))
    present = {r.cls for r in receptacles}
    for cls in sorted(scene_classes & _STATIC_RECEPTACLES - present - alfred_constants.OPENABLE_CLASS_SET):
        copies = STOVE_BURNERS if cls == "StoveBurner" else 1
        receptacles += [Receptacle(cls, _synthetic_coords(cls, i), False) for i in range(copies)]
    objects = tuple(sorted(scene_classes & PICKUPABLE))
    lamps = tuple(lamp for lamp in LAMPS if lamp in scene_classes)
    return FloorPlan(number, room, tuple(receptacles), objects, lamps)


def split_floor_plans(split: str) -> tuple[int, ...]:
    """Floor plans a built-in split draws from: valid_unseen only ALFRED's unseen rooms, the others all the rest."""
    if split == "valid_unseen":
        return UNSEEN_FLOOR_PLANS
    return tuple(n for n in all_floor_plan_numbers() if n not in UNSEEN_FLOOR_PLANS)


def layout_receptacle_counts() -> dict[str, list[int]]:
    """Per room kind, the receptacle count of each floor plan as ALFRED's layout files list them (openable.json)."""
    counts: dict[str, list[int]] = {room: [] for room in ROOM_OF_RANGE}
    for number in all_floor_plan_numbers():
        layout = json.loads((LAYOUT_DIR / f"FloorPlan{number}-openable.json").read_text())
        counts[room_of(number)].append(len(layout))
    return counts
