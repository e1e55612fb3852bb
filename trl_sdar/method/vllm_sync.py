"""vLLM weight sync with an EMA teacher adapter: send vLLM the policy's weights only.

PEFT keeps, for every `modules_to_save` module (e.g. `lm_head`), one trainable copy per adapter. TRL's sync merges the
active adapter, skips LoRA weights and original modules, and renames the `default` adapter's copies to the base name;
the EMA teacher's copies (`lm_head.modules_to_save.teacher.weight`) would reach vLLM under a name no model has. While
TRL syncs, the teacher's copies are taken out of their wrappers, then put back, unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from trl_sdar.method.teacher import EMA_ADAPTER


@contextmanager
def ema_copies_hidden(model: nn.Module) -> Iterator[int]:
    """Inside: the EMA teacher's `modules_to_save` copies are out of `model` (yields how many were taken out)."""
    taken = []
    for module in model.modules():
        copies = getattr(module, "modules_to_save", None)
        if isinstance(copies, nn.ModuleDict) and EMA_ADAPTER in copies:
            taken.append((copies, copies.pop(EMA_ADAPTER)))
    try:
        yield len(taken)
    finally:
        for copies, teacher_copy in taken:
            copies[EMA_ADAPTER] = teacher_copy


def sync_policy_only(vllm_generation, model: nn.Module) -> None:
    """Make `vllm_generation.sync_weights` (TRL's, called by TRL and by the turn unit) run with the EMA teacher's
    copies hidden."""
    sync = vllm_generation.sync_weights

    def sync_weights(*args, **kwargs):
        with ema_copies_hidden(model):
            return sync(*args, **kwargs)

    vllm_generation.sync_weights = sync_weights
