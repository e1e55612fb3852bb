"""Keep only the tasks of some types: train or evaluate on part of a benchmark (one ALFWorld task type, say); or
interleave the types so that every step of training sees them in equal shares.

The paper reports ALFWorld per task type; a small model that can solve the simplest type but not the others gets
an outcome signal from GRPO only on that type, so a study at small scale may restrict training and evaluation to
it. Selection reads each task's `Task.task_type` (`env.task(task_id)`), so it works for every environment.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from trl_sdar.envs.base import AgentEnv
from trl_sdar.envs.task_order import order_items

LOOK_FURTHER = 1024  # ids past the range scanned to tell a type outside the range from a misspelled one


def select_task_types(env: AgentEnv, task_ids: Iterable[int], task_types: Sequence[str] | None,
                      *, field: str = "task_types", widen: str = "raise num_train_tasks") -> list[int]:  # fmt: skip
    """The ids among `task_ids` whose task type is one of `task_types`, in their order (all of them if None/empty).

    Raises ValueError naming `field` when a requested type has no task among the ids, and says which case it is: a
    name that is no task type of the environment (with the valid ones and the closest), or a valid type that only
    occurs past these ids (with the first id that has it, and `widen`: how the caller's user reaches it).
    """
    task_ids = list(task_ids)
    if not task_types:
        return task_ids
    types = {task_id: env.task(task_id).task_type for task_id in task_ids}
    present = sorted(set(types.values()))
    missing = [t for t in task_types if t not in present]
    if missing:
        _raise_missing(env, task_ids, list(task_types), missing, present, field, widen)
    wanted = set(task_types)
    return [task_id for task_id in task_ids if types[task_id] in wanted]


def interleave_task_types(task_types: Sequence[str], seed: int) -> list[int]:
    """Positions 0..n-1 of tasks whose types are `task_types`, reordered round-robin over the types: one task of each
    type in turn (types in the order they first occur), each type's tasks in the order of `order_items(…, seed)`.
    A type that runs out drops from the round, so every window of k consecutive positions holds each type
    floor(k / types) or ceil(k / types) times for as long as every type lasts."""
    by_type: dict[str, list[int]] = {}
    for position, task_type in enumerate(task_types):
        by_type.setdefault(task_type, []).append(position)
    queues = [order_items(positions, seed) for positions in by_type.values()]
    order = []
    for rank in range(max((len(q) for q in queues), default=0)):
        order += [queue[rank] for queue in queues if rank < len(queue)]
    return order


def _first_ids_past(env: AgentEnv, start: int) -> dict[str, int]:
    """Each task type's first id in `start … start + LOOK_FURTHER` (fewer where the environment's tasks end)."""
    first: dict[str, int] = {}
    for task_id in range(start, start + LOOK_FURTHER):
        try:
            task_type = env.task(task_id).task_type
        except (IndexError, KeyError, ValueError):  # past the last task of a finite task list
            break
        first.setdefault(task_type, task_id)
    return first


def _raise_missing(env, task_ids, task_types, missing, present, field, widen) -> None:
    later = _first_ids_past(env, max(task_ids) + 1 if task_ids else 0)
    known = sorted(set(present) | set(later))
    unknown = [t for t in missing if t not in later]
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{field}={task_types!r}: {unknown[0]!r} is not a {env.name} task type{hint}; valid "
                         f"types: {known}.")  # fmt: skip
    span = f"ids {min(task_ids)}..{max(task_ids)}" if task_ids else "no ids"
    first = min(later[t] for t in missing)
    raise ValueError(f"{field}={task_types!r}: {missing} is a valid {env.name} task type with no task among the "
                     f"{len(task_ids)} task(s) ({span}; types present: {present}); the first such task is id "
                     f"{first}: {widen}.")  # fmt: skip
