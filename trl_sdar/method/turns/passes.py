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
    number on every process): all but the last are back-propagated here, the last is returned to the Trainer, which
    back-propagates it as usual. The returned loss carries the earlier passes' values, detached, for logging."""
    from accelerate.utils import DistributedType

    accelerator = trainer.accelerator
    rows = inputs["prompt_ids"].size(0)
    width = inputs["prompt_ids"].size(1) + inputs["completion_ids"].size(1)
    local = chunks_needed(rows, width, trainer.args.max_tokens_per_backward)
    passes = int(accelerator.gather(torch.tensor([local], device=accelerator.device)).max().item())
    *earlier, last = chunk_slices(rows, passes)
    done = None
    for part in earlier:
        loss = compute_loss(model, slice_rows(inputs, part, rows), return_outputs, num_items_in_batch)
        if accelerator.distributed_type == DistributedType.DEEPSPEED:  # no optimizer step inside a pass
            accelerator.deepspeed_engine_wrapped.backward(loss, sync_gradients=False, scale_wrt_gas=False)
        else:
            accelerator.backward(loss)
        done = loss.detach() if done is None else done + loss.detach()
    loss = compute_loss(model, slice_rows(inputs, last, rows), return_outputs, num_items_in_batch)
    return loss if done is None else loss + done
