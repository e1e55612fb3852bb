"""Skip an optimizer step whose gradients are not finite, instead of writing NaN into the weights.

One NaN or inf anywhere in a step's loss (an overflowing importance ratio, a student forward that produced NaN)
makes every gradient it reaches NaN, and one optimizer step with them ruins the model for good. Before each
optimizer step, `SkipNonFiniteSteps` checks the gradients (all processes together: FSDP shards them); if any is not
finite, it drops them all (`grad = None`), so the optimizer leaves every weight and its moments as they were. The
step still counts (the learning-rate schedule moves on); `train/nonfinite_step_skipped` logs the share of skipped
steps in each logging window, and each skip is warned with its step number.

Under DeepSpeed the engine owns the gradients (partitioned, not in `param.grad`), so nothing is checked there.
"""

from __future__ import annotations

import logging

import torch
from transformers import TrainerCallback

from trl_sdar.method.finite_weights import local_part
from trl_sdar.method.teacher_sharding import any_over_processes

logger = logging.getLogger("trl_sdar")
METRIC = "train/nonfinite_step_skipped"


def gradients_finite(model: torch.nn.Module) -> bool:
    """Whether every gradient this process holds (its shard, under FSDP2) is finite."""
    grads = [local_part(p.grad) for p in model.parameters() if p.grad is not None]
    return not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())


class SkipNonFiniteSteps(TrainerCallback):
    def __init__(self, trainer):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        trainer = self.trainer
        if trainer.is_deepspeed_enabled:
            return
        # collective: every process reaches each optimizer step (FSDP shards the gradients)
        skipped = any_over_processes(trainer.accelerator)(not gradients_finite(trainer.model))
        trainer._metrics["train"][METRIC].append(float(skipped))
        if skipped:
            for param in trainer.model.parameters():
                param.grad = None  # the optimizer skips parameters without a gradient
            logger.warning(
                f"step {state.global_step + 1}: the gradients are not finite (NaN/inf in the loss); this optimizer "
                "step is skipped and the weights are kept."
            )
