"""trl_sdar: SDAR (Self-Distilled Agentic Reinforcement Learning) as a drop-in extension of TRL's GRPOTrainer.

Public names are imported lazily, so that the environments and skills can be used without importing TRL (~6 s).
"""

from importlib import import_module

__all__ = ["EnvRollout", "RolloutSettings", "SDARConfig", "SDARTrainer", "env_reward", "sdar_distillation_loss"]
__version__ = "0.1.0"

_LOCATIONS = {
    "SDARConfig": ".method.config",
    "SDARTrainer": ".method.trainer",
    "sdar_distillation_loss": ".method.losses",
    "EnvRollout": ".agent.rollout",
    "RolloutSettings": ".agent.rollout",
    "env_reward": ".agent.rollout",
}


def __getattr__(name: str):
    if name in _LOCATIONS:
        return getattr(import_module(_LOCATIONS[name], __name__), name)
    raise AttributeError(f"module 'trl_sdar' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
