"""What TRL logs about a generation batch of turn rows, told without the padding rows.

TRL scores the padded rows of `batch.py` like any others, so its logs would count them: a one-token completion in
the length statistics (minimum 0 tokens, a lower mean), a "no reward" warning every batch, `prompt=None` rows and
TRL's own consecutive-row advantages in the completion tables, padding in the token count and in the
sequence-level importance-sampling statistics. These functions replace each of those with the value over the real
rows of all processes.
"""

from __future__ import annotations

import logging
from collections import deque
from contextlib import contextmanager

import torch

LENGTH_KEYS = ("mean_length", "min_length", "max_length", "clipped_ratio", "mean_terminated_length",
               "min_terminated_length", "max_terminated_length")  # fmt: skip
NO_REWARD = "All reward functions returned None"


def completion_length_metrics(lengths: list[int], truncated: list[bool]) -> dict[str, float]:
    """TRL's `completions/*` statistics over these rows: model-token lengths, the share cut before an end token, and
    the lengths of the rows that ended (0 when none did)."""
    if not lengths:
        return {key: float("nan") for key in LENGTH_KEYS}
    ended = [n for n, cut in zip(lengths, truncated, strict=True) if not cut] or [0]
    return {
        "mean_length": sum(lengths) / len(lengths),
        "min_length": float(min(lengths)),
        "max_length": float(max(lengths)),
        "clipped_ratio": sum(truncated) / len(truncated),
        "mean_terminated_length": sum(ended) / len(ended),
        "min_terminated_length": float(min(ended)),
        "max_terminated_length": float(max(ended)),
    }


def kept_rows(counts: list[int], target: int) -> list[int]:
    """Indices, in the gathered order (process 0's `target` rows, then process 1's, …), of the real rows."""
    return [p * target + j for p, real in enumerate(counts) for j in range(real)]


@contextmanager
def padding_rows_unrewarded():
    """While TRL scores a batch with padding rows: drop its warning that every reward function returned None (true,
    and meant, for padding rows only; the turn unit accepts no other reward function)."""

    def keep(record: logging.LogRecord) -> bool:
        return NO_REWARD not in record.getMessage()

    trl_logger = logging.getLogger("trl.trainer.grpo_trainer")
    trl_logger.addFilter(keep)
    try:
        yield
    finally:
        trl_logger.removeFilter(keep)


def widen_tables(trainer, rows_per_prompt: int) -> None:
    """Completion tables keep the last generation batch; with turn rows that is `rows_per_prompt` times more rows
    than TRL's `generation_batch_size` bound holds."""
    size = trainer.args.generation_batch_size * rows_per_prompt
    logs = trainer._logs
    for key in ("images", "prompt", "completion", "advantages"):
        logs[key] = deque(logs[key], maxlen=size)
    for key in ("rewards", "extra"):
        old = logs[key]
        logs[key] = type(old)(lambda: deque(maxlen=size))
        logs[key].update({name: deque(values, maxlen=size) for name, values in old.items()})


def retell_batch(trainer, rows, output: dict, mode: str, advantages: torch.Tensor) -> None:
    """Replace what TRL just logged about the padded batch `rows` (a `batch.TurnRows`) with the real rows' values;
    `advantages` are the turn advantages of the real rows of all processes, in gathered order."""
    from accelerate.utils import gather_object

    real = len(rows.local)
    lengths = [sum(mask) for mask in rows.replay["env_mask"][:real]]
    ends = {*trainer.eos_token_ids, trainer._tokenizer.pad_token_id}
    truncated = [ids[-1] not in ends if ids else False for ids in rows.replay["completion_ids"][:real]]
    pairs = gather_object(list(zip(lengths, truncated, strict=True)))
    stats = completion_length_metrics([n for n, _ in pairs], [cut for _, cut in pairs])
    metrics = trainer._metrics[mode]
    for key, value in stats.items():
        if metrics.get(f"completions/{key}"):
            metrics[f"completions/{key}"][-1] = value
    padding = rows.target * len(rows.counts) - sum(rows.counts)
    if mode == "train" and padding:  # each padding row added one (prompt) token to TRL's count
        trainer.state.num_input_tokens_seen -= padding
        metrics["num_tokens"] = [trainer.state.num_input_tokens_seen]
    _retell_tables(trainer, rows, advantages)
    _retell_importance_sampling(trainer, output, metrics, real)


def _retell_tables(trainer, rows, advantages: torch.Tensor) -> None:
    """The table rows TRL appended for this batch (all processes', padding included) → the real rows, each with the
    advantage it is trained with."""
    logs, appended = trainer._logs, rows.target * len(rows.counts)
    keep = kept_rows(rows.counts, rows.target)
    for column in [logs["prompt"], logs["completion"], *logs["rewards"].values(), *logs["extra"].values()]:
        if len(column) >= appended:  # (shorter: cut before this batch was logged, nothing of it to correct)
            batch = [column.pop() for _ in range(appended)][::-1]
            column.extend(batch[i] for i in keep)
    if len(logs["advantages"]) >= appended:
        for _ in range(appended):
            logs["advantages"].pop()
        logs["advantages"].extend(advantages.tolist())


def _retell_importance_sampling(trainer, output: dict, metrics: dict, real: int) -> None:
    """vLLM importance-sampling statistics over the real rows' model tokens (a process without any: left out)."""
    ratio = output.get("importance_sampling_ratio")
    if ratio is None or not metrics.get("sampling/importance_sampling_ratio/mean"):
        return
    mask = output["completion_mask"][:real].bool()
    if "tool_mask" in output:
        mask = mask & output["tool_mask"][:real].bool()
    values = ratio[:real].flatten() if ratio.size(1) == 1 else ratio[:real][mask]  # sequence- or token-level
    nan = torch.tensor(float("nan"), device=ratio.device)
    local = torch.stack([values.min(), values.mean(), values.max()]) if values.numel() else torch.stack([nan] * 3)
    every = trainer.accelerator.gather(local.unsqueeze(0))  # (processes, 3)
    finite = every[~torch.isnan(every[:, 0])]
    if len(finite):
        metrics["sampling/importance_sampling_ratio/min"][-1] = finite[:, 0].min().item()
        metrics["sampling/importance_sampling_ratio/mean"][-1] = finite[:, 1].mean().item()
        metrics["sampling/importance_sampling_ratio/max"][-1] = finite[:, 2].max().item()
