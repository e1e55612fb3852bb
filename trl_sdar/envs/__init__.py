"""Agent environments by name: `alfworld`, `webshop`, `search_qa` (built-in offline versions by default), and
`doors`, a small world made for testing SDAR's mechanism (`trl_sdar.envs.doors`)."""

from __future__ import annotations

from importlib import import_module

from trl_sdar.envs.base import AgentEnv, Observation, StepResult, Task

ENV_CLASSES = {
    "alfworld": ("trl_sdar.envs.alfworld", "AlfworldEnv"),
    "webshop": ("trl_sdar.envs.webshop", "WebShopEnv"),
    "search_qa": ("trl_sdar.envs.search_qa", "SearchQAEnv"),
    "doors": ("trl_sdar.envs.doors", "DoorsEnv"),
}


def make_env(name: str, *, subprocess: bool = False, **kwargs) -> AgentEnv:
    """Create environment `name` with constructor keyword arguments (imported lazily: engines are heavy).

    `subprocess=True` runs it in its own process (`SubprocessEnv`): parallel episodes for engines that are not
    thread-safe (ALFWorld), and hung steps that can be killed.
    """
    if name not in ENV_CLASSES:
        raise ValueError(f"Unknown environment {name!r}; expected one of {sorted(ENV_CLASSES)}.")
    if subprocess:
        from trl_sdar.envs.subprocess_env import SubprocessEnv

        return SubprocessEnv(name, **kwargs)
    module, cls = ENV_CLASSES[name]
    return getattr(import_module(module), cls)(**kwargs)


__all__ = ["AgentEnv", "ENV_CLASSES", "Observation", "StepResult", "Task", "make_env"]
