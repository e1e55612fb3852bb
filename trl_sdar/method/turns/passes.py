"""Token-bounded micro-batches: split one training micro-batch into chunks for separate backward passes (pure
helpers, then `backward_in_passes`, which runs them).

In the `turn` unit a micro-batch holds as many rows as an episode has turns, so its size is not known in advance.
`SDARConfig.max_tokens_per_backward` bounds the padded tokens one forward/backward pass holds; every process runs
the same number of passes (the largest any process needs), so collective operations stay in lockstep.
"""

from __future__ import annotations

import torch


def chunks_needed(num_rows: int, width: int, max_tokens: int | None) -> int:
    """Passes one process needs for `num_rows` rows padded to `width` tokens (at most `num_rows`, at least 1)."""
    if max_tokens is None or num_rows <= 1:
        return 1
    return max(1, min(num_rows, -(-(num_rows * width) // max_tokens)))


def chunk_slices(num_rows: int, num_chunks: int) -> list[slice]:
    """`num_chunks` contiguous, non-empty slices of `num_rows` rows whose sizes differ by at most one."""
    if not 1 <= num_chunks <= max(num_rows, 1):
        raise ValueError(f"cannot split {num_rows} rows into {num_chunks} non-empty chunks")
    base, extra = divmod(num_rows, num_chunks)
    bounds, start = [], 0
    for i in range(num_chunks):
        stop = start + base + (1 if i < extra else 0)
        bounds.append(slice(start, stop))
        start = stop
    return bounds


def slice_rows(inputs: dict, rows: slice, num_rows: int) -> dict:
    """The rows `rows` of a batch dict: tensors and lists with `num_rows` entries are sliced, scalars kept."""
    out = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.size(0) == num_rows:
            out[key] = value[rows]
        elif isinstance(value, list) and len(value) == num_rows:
            out[key] = value[rows]
        else:
            out[key] = value
    return out


def backward_in_passes(trainer, compute_loss, model, inputs, return_outputs=False, num_items_in_batch=None):
    """`compute_loss` of a turn-row micro-batch run as several `max_tokens_per_backward`-bounded passes (the same
    number on every process). Training: all but the last pass are back-propagated here, the last is returned to the
    Trainer, which back-propagates it as usual. Evaluation (no gradient): the passes' losses are summed. The returned
    loss carries the earlier passes' values, detached, for logging.

    TRL's per-micro-batch bookkeeping happens once, as for an unsplit micro-batch: its adaptive entropy controller
    steps on the last pass only (earlier passes add their entropy to its window), and `policy_loss` is logged once,
    with the whole micro-batch's value."""
    from accelerate.utils import DistributedType

    accelerator = trainer.accelerator
    rows = inputs["prompt_ids"].size(0)
    width = inputs["prompt_ids"].size(1) + inputs["completion_ids"].size(1)
    local = chunks_needed(rows, width, trainer.args.max_tokens_per_backward)
    passes = int(accelerator.gather(torch.tensor([local], device=accelerator.device)).max().item())
    *earlier, last = chunk_slices(rows, passes)
    backward = torch.is_grad_enabled()  # False inside `prediction_step` (evaluation)
    metrics = trainer._metrics["train" if trainer.model.training else "eval"]
    logged, shares, done = len(metrics.get("policy_loss", ())), [], None  # (reading, not adding, the key)
    trainer.accelerator = _WithinStep(accelerator)
    try:
        for part in earlier:
            loss = compute_loss(model, slice_rows(inputs, part, rows), return_outputs, num_items_in_batch)
            shares.append(trainer._policy_share)
            if backward and accelerator.distributed_type == DistributedType.DEEPSPEED:  # no optimizer step yet
                accelerator.deepspeed_engine_wrapped.backward(loss, sync_gradients=False, scale_wrt_gas=False)
            elif backward:
                accelerator.backward(loss)
            done = loss.detach() if done is None else done + loss.detach()
    finally:
        trainer.accelerator = accelerator
    loss = compute_loss(model, slice_rows(inputs, last, rows), return_outputs, num_items_in_batch)
    shares.append(trainer._policy_share)
    if len(metrics.get("policy_loss", ())) > logged:  # TRL logs it (entropy bonus on): once per micro-batch
        del metrics["policy_loss"][logged:]
        metrics["policy_loss"].append(_whole_policy_loss(trainer, inputs, torch.stack(shares).sum()))
    return loss if done is None else loss + done


class _WithinStep:
    """The trainer's accelerator as TRL's loss sees it during all but the last pass: `sync_gradients` is False, so
    the optimizer step's once-only work (the adaptive entropy controller's update, the `entropy_coef` log) waits for
    the last pass. Everything else is the accelerator's own."""

    sync_gradients = False

    def __init__(self, accelerator):
        self._accelerator = accelerator

    def __getattr__(self, name):
        return getattr(self._accelerator, name)


def _whole_policy_loss(trainer, inputs: dict, share: torch.Tensor) -> float:
    """TRL's `policy_loss` value for the unsplit micro-batch, from the passes' summed shares of the batch loss
    (`loss_share.py`): share / the micro-batch's own share, times TRL's accumulation normaliser; averaged over the
    processes as TRL averages it."""
    from trl_sdar.method.turns.loss_share import turn_factor

    whole = turn_factor(trainer, inputs)
    accumulated = trainer.model.training and trainer.loss_type not in ("cispo", "dapo", "vespo")
    normaliser = trainer.current_gradient_accumulation_steps if accumulated else 1
    local = share * normaliser / whole if whole else torch.full_like(share, float("nan"))
    return trainer.accelerator.gather(local.reshape(1)).nanmean().item()
