"""Which game, goal or question a task id names in a real data split: file order, or a seeded permutation.

Released splits are ordered: ALFWorld's games sort by path and ALFRED's folder names start with the task type,
Search-R1's `train.parquet` holds every NQ question before the HotpotQA ones, WebShop's goal files group goals by
product. A contiguous id range over such a list covers one or two task types or sources. The reference code samples
from the whole split (a seeded shuffled cycle over ALFWorld's games, shuffled WebShop goals, a shuffled dataloader
for Search-QA); here task id i names the i-th item of a seeded permutation of the whole split, so any id range is a
uniform sample of it and the same seed always gives the same tasks.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def check_order_seed(seed: int | None, field: str = "task_order_seed") -> None:
    """Raise a one-line ValueError unless `seed` is None (file order) or a non-negative integer."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"{field}={seed!r} is not valid; expected null (file order) or an integer >= 0.")


def order_items(items: Sequence[T], seed: int | None) -> list[T]:
    """`items` in file order (seed None) or in the order of a permutation drawn from `random.Random(seed)`.

    The permutation is a Fisher-Yates shuffle driven by `Random.random()` alone, whose output for a given seed Python
    guarantees across versions (`Random.shuffle` carries no such promise), so a recorded seed reproduces the task
    ids of a run on the same data.
    """
    check_order_seed(seed)
    ordered = list(items)
    if seed is None:
        return ordered
    rng = random.Random(seed)
    for i in range(len(ordered) - 1, 0, -1):
        j = int(rng.random() * (i + 1))
        ordered[i], ordered[j] = ordered[j], ordered[i]
    return ordered
