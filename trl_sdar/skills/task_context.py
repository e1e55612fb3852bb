"""`skills: task`: the privileged context is the task's own, from its environment (`Task.info["privileged_context"]`)
rather than from a skill bank: what the environment knows about this task and the agent cannot see, e.g. the doors
world's answers, or a noisy version of them (`trl_sdar.envs.doors`)."""

from __future__ import annotations

from trl_sdar.envs.base import Task

INFO_KEY = "privileged_context"


def task_context(task: Task) -> str | None:
    """The context the task's environment wrote for it; None (no distillation for it) when it wrote none."""
    return task.info.get(INFO_KEY)


def skills_for(env_name: str, mode: str, **selector_kwargs):
    """The privileged-context function a recipe's `skills` names: `task_context` for `"task"`, else a
    `SkillSelector` over `env_name`'s bank (`selector_kwargs`: library, top_k, rules)."""
    if mode == "task":
        return task_context
    from trl_sdar.skills.library import load_builtin_skills
    from trl_sdar.skills.selection import SkillSelector

    library = selector_kwargs.pop("library", None) or load_builtin_skills(env_name)
    return SkillSelector(library, mode=mode, **selector_kwargs)
