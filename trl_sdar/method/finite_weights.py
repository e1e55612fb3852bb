"""Refuse to save weights that are not finite.

A diverged run (an exploding loss, an overflow in bf16) turns weights into NaN or inf, and `Trainer` saves them
like any others: the run exits 0 and says "Model saved". `SDARTrainer.save_model` (final model and every
checkpoint) calls `check_finite_weights` first, so such a run stops with the step instead of writing a broken
model over a good one.
"""

from __future__ import annotations

import math

import torch

from trl_sdar.method.teacher_sharding import any_over_processes


class NonFiniteWeightsError(RuntimeError):
    """The model's weights hold NaN or inf; nothing was saved."""


def local_part(param: torch.Tensor) -> torch.Tensor:
    """This process's share of a parameter: the shard under DeepSpeed ZeRO-3 or FSDP2, else the tensor itself."""
    shard = getattr(param, "ds_tensor", None)  # DeepSpeed ZeRO-3 keeps an empty placeholder in `param`
    if shard is not None:
        return shard
    to_local = getattr(param, "to_local", None)  # FSDP2 DTensor
    return to_local() if callable(to_local) else param


def nonfinite_parameters(model: torch.nn.Module) -> list[str]:
    """Names of the parameters (this process's part of them) that hold a NaN or an inf value."""
    return [
        name for name, param in model.named_parameters() if not bool(torch.isfinite(local_part(param).detach()).all())
    ]


def first_nonfinite_log(log_history: list[dict]) -> str | None:
    """'grad_norm was nan at step 3', from the first logged loss or grad norm that is not finite; None if none."""
    for entry in log_history:
        for key in ("loss", "grad_norm"):
            value = entry.get(key)
            if isinstance(value, float) and not math.isfinite(value):
                return f"{key} was {value} at step {entry.get('step')}"
    return None


def check_finite_weights(trainer, output_dir: str | None) -> None:
    """Raise `NonFiniteWeightsError` naming the step when any process's weights are not finite (collective: every
    process calls it, as every process calls `save_model`)."""
    bad = nonfinite_parameters(trainer.model)
    if not any_over_processes(trainer.accelerator)(bool(bad)):
        return
    where = f"{len(bad)} tensors on this process, e.g. {bad[0]}" if bad else "on another process"
    first = first_nonfinite_log(trainer.state.log_history)
    since = f"; {first}" if first else ""
    raise NonFiniteWeightsError(
        f"the model's weights are not finite (NaN/inf) at step {trainer.state.global_step} ({where}){since}: not "
        f"saving to {output_dir or trainer.args.output_dir}. Lower learning_rate or the loss coefficients "
        "(sdar_coef, beta), or resume from an earlier checkpoint."
    )
