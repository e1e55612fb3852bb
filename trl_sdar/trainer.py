"""`SDARTrainer`: TRL's `GRPOTrainer` plus SDAR's gated on-policy self-distillation term (METHOD.md §2–3).

Only plumbing lives here; the math is in `losses.py`, the teacher prompt assembly and teacher weights in
`teacher.py`.
"""

from __future__ import annotations

import logging

import torch
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import get_config_model_id

from .config import SDARConfig
from .losses import (
    aggregate_like_grpo,
    naive_opsd_per_token_loss,
    rlsd_advantages,
    rlsd_lambda,
    sdar_per_token_loss,
    skill_sd_per_token_loss,
)
from .prefix_scoring import prefix_sharing_unsupported_reason, shared_prefix_logps
from .teacher import ContextTokenizer, Teacher, build_teacher_prompts, prompt_bos_token_id

logger = logging.getLogger(__name__)


class _EMATeacherCallback(TrainerCallback):
    """Moves the `ema` teacher towards the policy after every optimizer step."""

    def __init__(self, teacher: Teacher):
        self.teacher = teacher

    def on_step_end(self, args, state, control, **kwargs):
        self.teacher.ema_update()


class SDARTrainer(GRPOTrainer):
    r"""
    Trainer for SDAR (Self-Distilled Agentic Reinforcement Learning): `L = L_GRPO + λ · L_SDAR`, where the same model,
    shown each row's privileged context, scores the student's sampled tokens and a sigmoid gate of the detached
    teacher–student gap sets how strongly each token is distilled. Accepts exactly the arguments of
    [`~trl.GRPOTrainer`]; `args` must be an [`SDARConfig`]. With `sdar_coef=0` it is GRPO.

    Overridden seams (and why):

    * `__init__`: builds the teacher (EMA adapter or frozen copy when asked) and the context tokenizer.
    * `_generate_and_score_completions`: dataset rows and `rollout_func` extras are only visible here, so this is where
      each row's context becomes teacher prompt ids (context + the student's exact prompt ids) and, by default, where
      the teacher scores the completion, once per generation batch (the paper's rollout-time teacher). The new
      batch-first tensors are shuffled and split with their rows by TRL.
    * `_get_per_token_logps_and_entropies`: keeps the student log-probs GRPO computes in the loss step, so the student
      forward runs once per micro-batch.
    * `_compute_loss`: adds `λ · L_SDAR`, reduced with the normaliser of the configured GRPO `loss_type`, and logs
      `sdar/*` metrics over trained tokens (environment tokens and padding excluded), gathered across processes.

    The paper's baselines are config values (`distill_loss_type`, `rl_loss_coef`, `sdar_coef`); RLSD reshapes the
    advantages at rollout time instead of adding a loss.
    """

    _tag_names = ["trl", "grpo", "sdar"]
    _name = "SDAR"

    def __init__(self, model, reward_funcs=None, args: SDARConfig | None = None, **kwargs):
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = SDARConfig(f"{model_name.split('/')[-1]}-SDAR")
        elif not isinstance(args, SDARConfig):
            kind = type(args).__name__ if isinstance(args, GRPOConfig) else repr(type(args))
            raise TypeError(f"SDARTrainer needs `args` to be a trl_sdar.SDARConfig, got {kind}; use SDARConfig.")
        super().__init__(model, reward_funcs, args=args, **kwargs)
        self._capture_student_logps = False
        self._student_logps: torch.Tensor | None = None
        self._warned: set[str] = set()
        self.teacher: Teacher | None = None
        self._share_teacher_prefix = False
        if args.sdar_coef > 0 or args.distill_loss_type == "rlsd":
            self.teacher = Teacher(self.accelerator.unwrap_model(self.model), args)
            if args.teacher_model_kind == "ema":
                self.add_callback(_EMATeacherCallback(self.teacher))
            self._bos_token_id = prompt_bos_token_id(self._tokenizer)
            self._context_tokenizer = ContextTokenizer(
                self._tokenizer, placement=args.teacher_context_placement, header=args.teacher_context_header
            )
            self._share_teacher_prefix = args.teacher_share_prefix and self._prefix_sharing_supported()

    def _prefix_sharing_supported(self) -> bool:
        reason = prefix_sharing_unsupported_reason(self.accelerator.unwrap_model(self.model))
        if reason is not None:
            logger.warning(
                f"teacher_share_prefix=True is not available for this model ({reason}); the teacher "
                "scores every row unshared."
            )
        return reason is None

    # ----------------------------------------------------------------------------------------------- rollout time
    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.teacher is None:
            return output
        if "pixel_values" in output:
            raise ValueError("SDARTrainer does not support vision inputs for the teacher; set sdar_coef=0.")
        # TRL merged every rollout_func extra field into `inputs`, so dataset columns and extras are read alike.
        column = self.args.teacher_context_column
        contexts = [self._context_tokenizer(row.get(column)) for row in inputs]
        prompts = build_teacher_prompts(
            output["prompt_ids"],
            output["prompt_mask"],
            contexts,
            pad_token_id=self._tokenizer.pad_token_id,
            max_length=self.args.teacher_max_prompt_length,
            bos_token_id=self._bos_token_id,
        )
        self._log_context_metrics(prompts, [c is not None for c in contexts])
        output["teacher_prompt_ids"] = prompts.ids
        output["teacher_prompt_mask"] = prompts.mask
        output["sdar_row_mask"] = prompts.has_teacher.to(output["completion_mask"].dtype)
        mode = "train" if self.model.training else "eval"
        batch = self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size
        if not self.args.teacher_logps_per_microbatch or self.args.distill_loss_type == "rlsd":
            output["teacher_per_token_logps"] = self._teacher_logps(output, batch_size=batch)
        if self.args.distill_loss_type == "rlsd":
            self._reshape_advantages_rlsd(output, batch)
        return output

    def _reshape_advantages_rlsd(self, output, batch_size: int) -> None:
        """RLSD: (B,) advantages → (B, T) token advantages from the rollout-time teacher gap (rows with a teacher)."""
        student = output.get("old_per_token_logps")
        if student is None:
            ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
            attention = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
            with torch.no_grad():
                student, _, _ = self._get_per_token_logps_and_entropies(
                    self.model, ids, attention, output["completion_ids"].size(1), batch_size=batch_size
                )
        lam = rlsd_lambda(self.state.global_step) * output["sdar_row_mask"].unsqueeze(1)  # (B, 1)
        reshaped = rlsd_advantages(output["advantages"], output["teacher_per_token_logps"], student, lam=1.0)
        plain = output["advantages"].unsqueeze(1)
        output["advantages"] = (1 - lam) * plain + lam * reshaped

    def _log_context_metrics(self, prompts, has_context: list[bool]) -> None:
        mode = "train" if self.model.training else "eval"
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
        tokens, with_context, truncated, without, dropped_n = self.accelerator.reduce(local, reduction="sum").tolist()
        self._metrics[mode]["sdar/context_tokens"].append(tokens / max(with_context, 1.0))
        self._metrics[mode]["sdar/context_truncated"].append(truncated)
        self._metrics[mode]["sdar/rows_without_teacher"].append(without)
        limit = self.args.teacher_max_prompt_length
        if truncated and "truncated" not in self._warned:
            self._warned.add("truncated")
            logger.warning(
                f"{int(truncated)} teacher prompt(s) exceeded teacher_max_prompt_length={limit}: the oldest student "
                "prompt tokens were dropped and the privileged context kept whole (counted in sdar/context_truncated)."
            )
        if dropped_n and "dropped" not in self._warned:
            self._warned.add("dropped")
            logger.warning(
                f"{int(dropped_n)} row(s) have a privileged context that alone reaches teacher_max_prompt_length="
                f"{limit}; they get no distillation (counted in sdar/rows_without_teacher). Raise the limit."
            )

    def _teacher_logps(self, inputs, batch_size: int | None = None) -> torch.Tensor:
        """Teacher log-probs of the completion tokens, (B, C), through the student's own log-prob path."""
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        prompt_ids, prompt_mask = inputs["teacher_prompt_ids"], inputs["teacher_prompt_mask"]
        gc_kwargs = self.args.gradient_checkpointing_kwargs
        with torch.no_grad(), disable_gradient_checkpointing(self.model, gc_kwargs):
            with self.teacher.scoring(self.model) as teacher_model:
                if self._share_teacher_prefix:  # each distinct prefix encoded once (prefix_scoring.py)
                    return shared_prefix_logps(
                        teacher_model,
                        prompt_ids,
                        prompt_mask,
                        completion_ids,
                        completion_mask,
                        batch_size=batch_size or completion_ids.size(0),
                        autocast=self.accelerator.autocast,
                    )
                input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
                attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
                logps, _, _ = self._get_per_token_logps_and_entropies(
                    teacher_model, input_ids, attention_mask, completion_ids.size(1), batch_size=batch_size
                )
        return logps

    # -------------------------------------------------------------------------------------------------- loss time
    def _get_per_token_logps_and_entropies(self, model, input_ids, *args, **kwargs):
        output = super()._get_per_token_logps_and_entropies(model, input_ids, *args, **kwargs)
        if self._capture_student_logps:
            self._student_logps = output[0]  # (B, C), with gradient: reused by the SDAR term
        return output

    def _compute_loss(self, model, inputs):
        if self.teacher is None:
            return super()._compute_loss(model, inputs)
        self._capture_student_logps = True
        try:
            loss = self.args.rl_loss_coef * super()._compute_loss(model, inputs)
        finally:
            self._capture_student_logps = False
        student_logps, self._student_logps = self._student_logps, None
        teacher_logps = inputs.get("teacher_per_token_logps")
        if teacher_logps is None:
            teacher_logps = self._teacher_logps(inputs)
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]  # environment / tool tokens are never trained nor distilled
        row_mask = inputs["sdar_row_mask"].unsqueeze(1)  # (B, 1): rows without a teacher contribute zero
        kind = self.args.distill_loss_type
        if kind == "sdar":
            beta = self.args.sdar_gate_beta
            per_token, gate, gap = sdar_per_token_loss(student_logps, teacher_logps, gate_beta=beta)
        elif kind == "naive":
            per_token, gate, gap = naive_opsd_per_token_loss(student_logps, teacher_logps)
        elif kind == "skill_sd":
            old = inputs.get("old_per_token_logps", student_logps.detach())
            per_token, gate, gap = skill_sd_per_token_loss(student_logps, teacher_logps, old)
        else:  # rlsd: the teacher already acted through the advantages; log its gap, add nothing
            per_token = torch.zeros_like(student_logps)
            gate, gap = torch.ones_like(student_logps), (teacher_logps - student_logps).detach()
        mode = "train" if self.model.training else "eval"
        sdar_loss = aggregate_like_grpo(
            per_token * row_mask,
            mask,
            self.loss_type,
            num_items_in_batch=inputs["num_items_in_batch"],
            num_processes=self.accelerator.num_processes,
            gradient_accumulation_steps=self.current_gradient_accumulation_steps if mode == "train" else 1,
            steps_per_generation=self.args.steps_per_generation,
            max_completion_length=self.max_completion_length,
            training=mode == "train",
        )
        self._log_gate_metrics(mode, per_token, gate, gap, mask * row_mask)
        return loss + self.args.sdar_coef * sdar_loss

    def _log_gate_metrics(self, mode: str, per_token, gate, gap, mask) -> None:
        mask = mask.to(gate.dtype)
        local = torch.stack(
            [
                (gate * mask).sum(),
                ((gate > 0.5).to(gate.dtype) * mask).sum(),
                (gap * mask).sum(),
                (per_token.detach() * mask).sum(),
                mask.sum(),
            ]
        )
        gate_sum, active, gap_sum, loss_sum, count = self.accelerator.reduce(local, reduction="sum").tolist()
        if count == 0:
            return  # no distilled token in this micro-batch anywhere: nothing to average
        self._metrics[mode]["sdar/gate_mean"].append(gate_sum / count)
        self._metrics[mode]["sdar/gate_active_ratio"].append(active / count)
        self._metrics[mode]["sdar/teacher_gap_mean"].append(gap_sum / count)
        self._metrics[mode]["sdar/loss"].append(loss_sum / count)
        self._metrics[mode]["sdar/distilled_tokens"].append(count)
