"""Keep only the tasks of some types: train or evaluate on part of a benchmark (one ALFWorld task type, say).

The paper reports ALFWorld per task type; a small model that can solve the simplest type but not the others gets
an outcome signal from GRPO only on that type, so a study at small scale may restrict training and evaluation to
it. Selection reads each task's `Task.task_type` (`env.task(task_id)`), so it works for every environment.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from trl_sdar.envs.base import AgentEnv


def select_task_types(env: AgentEnv, task_ids: Iterable[int], task_types: Sequence[str] | None,
                      *, field: str = "task_types") -> list[int]:  # fmt: skip
    """The ids among `task_ids` whose task type is one of `task_types`, in their order (all of them if None/empty).

    Raises ValueError naming `field` when a requested type has no task among the ids, with the types that do occur
    there (a typo, or a type the id range misses), so a run never silently trains on fewer types than asked.
    """
    task_ids = list(task_ids)
    if not task_types:
        return task_ids
    types = {task_id: env.task(task_id).task_type for task_id in task_ids}
    present = sorted(set(types.values()))
    missing = [t for t in task_types if t not in present]
    if missing:
        span = f"ids {min(task_ids)}..{max(task_ids)}" if task_ids else "no ids"
        raise ValueError(f"{field}={list(task_types)!r}: no {env.name} task of type {missing} among the "
                         f"{len(task_ids)} task(s) ({span}); types present: {present}.")  # fmt: skip
    wanted = set(task_types)
    return [task_id for task_id in task_ids if types[task_id] in wanted]
