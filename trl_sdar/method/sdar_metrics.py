"""The `sdar/*` metrics a training step logs, reduced over all processes, and the one-time warnings they raise."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


def log_context_metrics(trainer, prompts, has_context: list[bool]) -> None:
    """sdar/context_tokens, context_truncated, rows_without_teacher over all processes; warn once about each."""
    mode = "train" if trainer.model.training else "eval"
    device = prompts.ids.device
    has_context = torch.tensor(has_context, dtype=torch.bool, device=device)
    dropped = has_context & ~prompts.has_teacher
    local = torch.stack(
        [
            (prompts.context_tokens * has_context).sum().float(),
            has_context.sum().float(),
            prompts.truncated.sum().float(),
            (~prompts.has_teacher).sum().float(),
            dropped.sum().float(),
        ]
    )
    tokens, with_context, truncated, without, dropped_n = trainer.accelerator.reduce(local, reduction="sum").tolist()
    trainer._metrics[mode]["sdar/context_tokens"].append(tokens / max(with_context, 1.0))
    trainer._metrics[mode]["sdar/context_truncated"].append(truncated)
    trainer._metrics[mode]["sdar/rows_without_teacher"].append(without)
    limit = trainer.args.teacher_max_prompt_length
    if truncated and "truncated" not in trainer._warned:
        trainer._warned.add("truncated")
        logger.warning(
            f"{int(truncated)} teacher prompt(s) exceeded teacher_max_prompt_length={limit}: the oldest student "
            "prompt tokens were dropped and the privileged context kept whole (counted in sdar/context_truncated)."
        )
    if dropped_n and "dropped" not in trainer._warned:
        trainer._warned.add("dropped")
        logger.warning(
            f"{int(dropped_n)} row(s) have a privileged context that alone reaches teacher_max_prompt_length="
            f"{limit}; they get no distillation (counted in sdar/rows_without_teacher). Raise the limit."
        )


def log_gate_metrics(trainer, mode: str, per_token, gate, gap, mask, nonfinite: torch.Tensor) -> None:
    """sdar/gate_mean, gate_active_ratio, teacher_gap_mean, loss, distilled_tokens, nonfinite_tokens: token means
    over the distilled tokens of all processes (nothing appended where no process has one)."""
    mask = mask.to(gate.dtype)
    local = torch.stack(
        [
            (gate * mask).sum(),
            ((gate > 0.5).to(gate.dtype) * mask).sum(),
            (gap * mask).sum(),
            (per_token.detach() * mask).sum(),
            mask.sum(),
            nonfinite.to(gate.dtype),
        ]
    )
    gate_sum, active, gap_sum, loss_sum, count, bad = trainer.accelerator.reduce(local, reduction="sum").tolist()
    trainer._metrics[mode]["sdar/nonfinite_tokens"].append(bad)
    if bad and "nonfinite" not in trainer._warned:
        trainer._warned.add("nonfinite")
        logger.warning(
            f"{int(bad)} trained token(s) have NaN/inf teacher or student log-probs; they are left out of the "
            "SDAR term and its metrics (counted in sdar/nonfinite_tokens). Check the teacher's dtype and weights."
        )
    if count == 0:
        return  # no distilled token in this micro-batch anywhere: nothing to average
    trainer._metrics[mode]["sdar/gate_mean"].append(gate_sum / count)
    trainer._metrics[mode]["sdar/gate_active_ratio"].append(active / count)
    trainer._metrics[mode]["sdar/teacher_gap_mean"].append(gap_sum / count)
    trainer._metrics[mode]["sdar/loss"].append(loss_sum / count)
    trainer._metrics[mode]["sdar/distilled_tokens"].append(count)
