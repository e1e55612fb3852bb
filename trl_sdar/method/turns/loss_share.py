"""A chunk of turn rows weighs in the loss exactly as its share of the whole generation batch (`losses.
turn_loss_factor`), whichever `loss_type` GRPO uses and however the rows were split into micro-batches and passes;
TRL's entropy bonus, a token mean, is rescaled to a token mean over the whole batch."""

from __future__ import annotations

import torch

from trl_sdar.method.losses import turn_loss_factor


def trained_mask(inputs: dict) -> torch.Tensor:
    """(B, C) mask of the completion tokens that are trained: environment / tool tokens and padding excluded."""
    mask = inputs["completion_mask"]
    return mask * inputs["tool_mask"] if "tool_mask" in inputs else mask


def turn_factor(trainer, inputs: dict, loss_type: str | None = None) -> float:
    """`turn_loss_factor` of this chunk for turn rows (1.0 otherwise); `loss_type` defaults to GRPO's."""
    if "num_rows_in_batch" not in inputs:
        return 1.0
    return turn_loss_factor(
        loss_type or trainer.loss_type,
        rows=inputs["prompt_ids"].size(0),
        tokens=float(trained_mask(inputs).sum()),
        rows_in_batch=float(inputs["num_rows_in_batch"]),
        tokens_in_batch=float(inputs["num_items_in_batch"]),
        num_processes=trainer.accelerator.num_processes,
        steps_per_generation=trainer.args.steps_per_generation if trainer.model.training else 1,
    )


def applied_entropy_coef(trainer) -> float:
    """The entropy coefficient TRL applies in this micro-batch (its adaptive controller gates it)."""
    if not trainer._entropy_bonus_enabled:
        return 0.0
    if trainer.use_adaptive_entropy and trainer._last_world_entropy > trainer.args.entropy_target:
        return 0.0
    return trainer.entropy_coef


def rescale_turn_rows(trainer, loss, inputs: dict, factor: float, entropies, entropy_coef: float):
    """TRL's loss of a chunk of turn rows → its exact share of the generation batch's loss: the policy part by
    `factor`, the entropy bonus as a token mean over the whole batch.
    Sets `trainer._policy_share`, the policy part alone (detached), for the split passes' `policy_loss` log."""
    if entropy_coef == 0.0:
        trainer._policy_share = (factor * loss).detach()
        return factor * loss
    mask = trained_mask(inputs).to(entropies.dtype)
    accumulation = trainer.current_gradient_accumulation_steps if trainer.model.training else 1
    bonus = (entropies * mask).sum() / mask.sum().clamp(min=1.0) / accumulation  # exactly TRL's term
    entropy_factor = turn_factor(trainer, inputs, "bnpo")  # a token mean: the bnpo share of the batch
    policy = factor * (loss + entropy_coef * bonus)
    trainer._policy_share = policy.detach()
    return policy - entropy_factor * entropy_coef * bonus
