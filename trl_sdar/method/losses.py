"""Pure tensor math of the distillation term (docs/method.md). No trainer state, no I/O.

Notation: s_t = student log-prob of the sampled token (carries gradient), u_t = teacher log-prob of the same token
(no gradient), Δ_t = u_t − sg(s_t), g_t = sg(σ(β Δ_t)). All inputs are (B, T); `mask` is 1 on trained tokens.
"""

from __future__ import annotations

import torch


def sdar_per_token_loss(
    student_logps: torch.Tensor, teacher_logps: torch.Tensor, *, gate_beta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SDAR's per-token term `g_t · (sg(u_t) − s_t)`. Returns `(per_token_loss, gate, gap)`, each (B, T).

    Only `student_logps` receives gradient: ∂loss/∂s_t = −g_t, so every sampled token is pushed up by the gate's
    amount (≈1 where the teacher is more confident than the student, ≈0 where it rejects the token).
    """
    teacher = teacher_logps.detach()
    gap = teacher - student_logps.detach()  # Δ_t, (B, T)
    gate = torch.sigmoid(gate_beta * gap)  # g_t, detached because gap is
    return gate * (teacher - student_logps), gate, gap


def naive_opsd_per_token_loss(
    student_logps: torch.Tensor, teacher_logps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ungated GRPO+OPSD baseline: the signed sampled-token reverse-KL surrogate `−sg(Δ_t) · s_t`.

    Its gradient −Δ_t ∇s_t pushes teacher-endorsed tokens up and teacher-rejected tokens (Δ_t < 0) down. The
    returned gate is all ones (no gating). Returns `(per_token_loss, gate, gap)`, each (B, T).
    """
    gap = teacher_logps.detach() - student_logps.detach()
    return -gap * student_logps, torch.ones_like(gap), gap


def masked_token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over positions where `mask` is 1 (0 when the mask is empty)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def gate_statistics(gate: torch.Tensor, gap: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Diagnostics over masked tokens: mean gate, fraction with g > 0.5 (Δ > 0), mean gap Δ."""
    return {
        "gate_mean": masked_token_mean(gate, mask).item(),
        "gate_active_ratio": masked_token_mean((gate > 0.5).to(gate.dtype), mask).item(),
        "teacher_gap_mean": masked_token_mean(gap, mask).item(),
    }


def sdar_distillation_loss(
    student_logps: torch.Tensor, teacher_logps: torch.Tensor, mask: torch.Tensor, *, gate_beta: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """L_SDAR as a masked token-mean over trained tokens, with the gate diagnostics as Python floats."""
    per_token, gate, gap = sdar_per_token_loss(student_logps, teacher_logps, gate_beta=gate_beta)
    return masked_token_mean(per_token, mask), gate_statistics(gate, gap, mask)


def aggregate_like_grpo(
    per_token_loss: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str,
    *,
    num_items_in_batch: torch.Tensor | None = None,
    num_processes: int = 1,
    gradient_accumulation_steps: int = 1,
    steps_per_generation: int = 1,
    max_completion_length: int | None = None,
    training: bool = True,
) -> torch.Tensor:
    """Reduce a (B, T) per-token loss exactly as TRL 1.16's `GRPOTrainer._compute_loss` reduces its policy loss.

    Using the policy loss's own normaliser keeps λ's meaning relative to the RL term for every `loss_type`, batch
    layout and gradient-accumulation setting (docs/method.md). `num_items_in_batch` is the global count of trained
    tokens in the generation batch (TRL puts it in the inputs).
    """
    accumulation = gradient_accumulation_steps if training else 1
    masked = per_token_loss * mask
    if loss_type in ("grpo", "sapo"):
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / accumulation
    if loss_type == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1.0) / accumulation
    if loss_type == "dr_grpo":
        return masked.sum() / (per_token_loss.size(0) * max_completion_length) / accumulation
    if loss_type in ("cispo", "dapo", "vespo"):
        normalizer = num_items_in_batch.clamp(min=1.0) / num_processes
        if training:
            normalizer = normalizer * gradient_accumulation_steps / steps_per_generation
        return masked.sum() / normalizer
    if loss_type == "luspo":
        return masked.sum(-1).mean() / accumulation
    raise ValueError(f"Unknown loss_type {loss_type!r} for the SDAR term.")


def skill_sd_per_token_loss(
    student_logps: torch.Tensor, teacher_logps: torch.Tensor, old_logps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Skill-SD baseline (docs/method.md): `ρ_t · k3_t` with ℓ_t = s_t − u_t, k3_t = exp(−ℓ_t) − 1 + ℓ_t (the k3
    estimator of KL(student‖teacher) on the sampled token) and ρ_t = exp(min(s_t − s_old,t, 10)).

    Gradient flows through s_t in both factors. Returns `(per_token_loss, gate, gap)`; the gate is all ones.
    """
    ell = student_logps - teacher_logps.detach()
    k3 = torch.exp(-ell) - 1.0 + ell
    rho = torch.exp(torch.clamp(student_logps - old_logps.detach(), max=10.0))
    gap = teacher_logps.detach() - student_logps.detach()
    return rho * k3, torch.ones_like(gap), gap


def rlsd_lambda(step: int, start: float = 0.5, horizon: int = 100) -> float:
    """RLSD's mixing weight λ_t = start · (1 − step / horizon), and 0 from `horizon` on."""
    return start * (1.0 - step / horizon) if step < horizon else 0.0


def rlsd_advantages(
    advantages: torch.Tensor, teacher_logps: torch.Tensor, student_logps: torch.Tensor, lam: float, clip: float = 0.2
) -> torch.Tensor:
    """RLSD baseline: token advantages Â_t = A · ((1 − λ) + λ · clip(exp(sign(A) · Δ_t), 1 − clip, 1 + clip)).

    `advantages` is (B,) per sequence; the result is (B, T). Δ_t = u_t − s_t (both detached): where the teacher
    agrees more than the student, positive advantages grow and negative ones shrink (and the reverse).
    """
    gap = (teacher_logps - student_logps).detach()
    sign = torch.sign(advantages).unsqueeze(1)  # (B, 1)
    weight = torch.clamp(torch.exp(sign * gap), 1.0 - clip, 1.0 + clip)
    return advantages.unsqueeze(1) * ((1.0 - lam) + lam * weight)


def turn_loss_factor(
    loss_type: str,
    *,
    rows: int,
    tokens: float,
    rows_in_batch: float,
    tokens_in_batch: float,
    num_processes: int,
    steps_per_generation: int,
) -> float:
    """Factor that turns TRL's reduction of one chunk of rows into its exact share of the generation batch's loss.

    With a varying number of rows per micro-batch (the `turn` unit, padding rows included) TRL's per-micro-batch
    means no longer weigh rows or tokens alike. The target is each `loss_type`'s formula over the *real* rows of the
    whole generation batch (`rows_in_batch` rows, `tokens_in_batch` trained tokens, over all processes), split
    additively over processes (DDP averages, hence the `num_processes` factor) and over its `steps_per_generation`
    micro-batches; TRL's own `/ gradient_accumulation_steps` stays in place. For a chunk of `rows` rows with `tokens`
    trained tokens, TRL gives `Σ m_r / (rows · GA)` (grpo, sapo, dr_grpo with its constant, luspo),
    `Σ tokens / (tokens · GA)` (bnpo) or already the target (dapo, cispo, vespo: global token count). Pass
    `steps_per_generation=1` in evaluation. The same factor applies to the SDAR term, which uses TRL's reduction.
    """
    share = num_processes * steps_per_generation
    if loss_type in ("grpo", "sapo", "dr_grpo", "luspo"):
        return share * rows / max(rows_in_batch, 1.0)
    if loss_type == "bnpo":
        return share * max(tokens, 1.0) / max(tokens_in_batch, 1.0)
    if loss_type in ("dapo", "cispo", "vespo"):
        return 1.0
    raise ValueError(f"Unknown loss_type {loss_type!r} for turn rows.")


def finite_only(student: torch.Tensor, teacher: torch.Tensor, old: torch.Tensor | None):
    """Zero every (B, C) log-prob where any of them is NaN/inf, so neither the SDAR loss nor its gradient is NaN;
    returns the cleaned tensors and the (B, C) bool mask of finite tokens."""
    finite = torch.isfinite(student) & torch.isfinite(teacher)
    if old is not None:
        finite &= torch.isfinite(old)
        old = torch.where(finite, old, torch.zeros_like(old))
    student = torch.where(finite, student, torch.zeros_like(student))  # no gradient flows to a dropped token
    teacher = torch.where(finite, teacher, torch.zeros_like(teacher))
    return student, teacher, old, finite
