"""`SDARTrainer`: TRL's `GRPOTrainer` plus SDAR's gated on-policy self-distillation term (METHOD.md §2–3).

Only the seams into TRL live here; the math is in `losses.py`, the teacher prompt assembly and teacher weights in
`teacher.py`, the turn-row batch machinery (padding, replay, advantage replacement, split passes, loss shares) in
`turns/`, and the `sdar/*` metrics in `sdar_metrics.py`.
"""

from __future__ import annotations

import logging

import torch
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import get_config_model_id

from trl_sdar.method.checkpoint import load_training_state, save_training_state
from trl_sdar.method.config import SDARConfig
from trl_sdar.method.cpu_head import compact_cpu_head
from trl_sdar.method.finite_weights import check_finite_weights
from trl_sdar.method.launch_check import check_launched_processes, warn_if_sharding_dropped
from trl_sdar.method.losses import (
    aggregate_like_grpo,
    finite_only,
    naive_opsd_per_token_loss,
    rlsd_advantages,
    rlsd_lambda,
    sdar_per_token_loss,
    skill_sd_per_token_loss,
)
from trl_sdar.method.metrics_log import MetricsJSONLCallback
from trl_sdar.method.nonfinite_steps import SkipNonFiniteSteps
from trl_sdar.method.prefix_scoring import (
    keep_in_step,
    prefix_sharing_unsupported_reason,
    shared_prefix_logps,
    shared_prefix_scores,
)
from trl_sdar.method.sdar_metrics import log_context_metrics, log_gate_metrics
from trl_sdar.method.teacher import ContextTokenizer, Teacher, build_teacher_prompts, prompt_bos_token_id
from trl_sdar.method.teacher_sharding import COLLECTIVE_FORWARD, most_over_processes, sharding_of
from trl_sdar.method.turns.batch import play_turn_rows, set_turn_advantages
from trl_sdar.method.turns.logged import padding_rows_unrewarded, widen_tables
from trl_sdar.method.turns.loss_share import applied_entropy_coef, rescale_turn_rows, trained_mask, turn_factor
from trl_sdar.method.turns.passes import backward_in_passes
from trl_sdar.method.vllm_sync import sync_policy_only
from trl_sdar.models import resolve_model_path

logger = logging.getLogger(__name__)


class _EMATeacherCallback(TrainerCallback):
    """Moves the `ema` teacher towards the policy after every optimizer step."""

    def __init__(self, teacher: Teacher):
        self.teacher = teacher

    def on_step_end(self, args, state, control, **kwargs):
        self.teacher.ema_update()


def _check_turn_rewards(reward_funcs, args: SDARConfig) -> None:
    """Turn rows take their advantages from the rollout's per-episode `env_reward`; other reward functions or
    weights would be computed and logged by TRL but never trained on: refuse them."""
    funcs = reward_funcs if isinstance(reward_funcs, list) else [reward_funcs]
    names = [getattr(f, "__name__", repr(f)) for f in funcs]
    only_env_reward = (
        len(funcs) == 1 and getattr(funcs[0], "__module__", "").startswith("trl_sdar.") and names == ["env_reward"]
    )
    if not only_env_reward or args.reward_weights is not None:
        raise ValueError(
            f"rollout_unit='turn' trains on the rollout's env_reward alone (the reference's turn-row advantages), so "
            f"reward_funcs={names} with reward_weights={args.reward_weights} would be ignored. Pass "
            "reward_funcs=[trl_sdar.env_reward] and no reward_weights, or use rollout_unit='episode' to combine "
            "reward functions."
        )


class SDARTrainer(GRPOTrainer):
    r"""
    Trainer for SDAR (Self-Distilled Agentic Reinforcement Learning): `L = L_GRPO + λ · L_SDAR`, where the same model,
    shown each row's privileged context, scores the student's sampled tokens and a sigmoid gate of the detached
    teacher–student gap sets how strongly each token is distilled. Accepts exactly the arguments of
    [`~trl.GRPOTrainer`]; `args` must be an [`SDARConfig`]. With `sdar_coef=0` it is GRPO.

    Overridden seams (and why):

    * `__init__`: builds the teacher (EMA adapter or frozen copy when asked) and the context tokenizer, and appends
      every log to `<output_dir>/metrics.jsonl` as it is logged (a killed run keeps its curves).
    * `_generate_and_score_completions`: dataset rows and `rollout_func` extras are only visible here, so this is where
      each row's context becomes teacher prompt ids (context + the student's exact prompt ids) and, by default, where
      the teacher scores the completion, once per generation batch (the paper's rollout-time teacher). The new
      batch-first tensors are shuffled and split with their rows by TRL.
    * `_get_per_token_logps_and_entropies`: keeps the student log-probs GRPO computes in the loss step, so the student
      forward runs once per micro-batch.
    * `_save_optimizer_and_scheduler` / `_load_optimizer_and_scheduler`: the EMA teacher's weights and TRL's buffered
      rollouts go into each checkpoint with the optimizer state and come back on resume (every backend resumes
      through these two), so a resumed run continues exactly (`checkpoint.py`).
    * `save_model` (the final model and every checkpoint): weights that are not finite are never saved; the run stops
      with the step instead (`finite_weights.py`).
    * `_compute_loss`: adds `λ · L_SDAR`, reduced with the normaliser of the configured GRPO `loss_type`, and logs
      `sdar/*` metrics over trained tokens (environment tokens and padding excluded), gathered across processes.
      Tokens whose teacher or student log-prob is NaN/inf are left out of the term and its metrics and counted in
      `sdar/nonfinite_tokens`.

    Turn rows (`EnvRollout` with `rollout_unit="turn"`, the paper's loop): an episode gives one row per model turn,
    so a batch has more rows than prompts, a varying number per process. `_generate_and_score_completions` plays the
    episodes first, pads every process to the same row count (padding rows carry no trained token), hands the rows to
    TRL's scoring as if each were a prompt, then replaces the advantages with the reference's turn-row GRPO
    advantages (`turns/batch.py`). `compute_loss` splits a micro-batch into `max_tokens_per_backward`-bounded passes
    (`turns/passes.py`), and each reduction is rescaled (`turns/loss_share.py`) so every `loss_type` weighs rows and
    tokens as over the whole generation batch.

    The paper's baselines are config values (`distill_loss_type`, `rl_loss_coef`, `sdar_coef`); RLSD reshapes the
    advantages at rollout time instead of adding a loss.
    """

    _tag_names = ["trl", "grpo", "sdar"]
    _name = "SDAR"

    def __init__(
        self,
        model,
        reward_funcs=None,
        args: SDARConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        reward_processing_classes=None,
        callbacks=None,
        optimizers=(None, None),
        quantization_config=None,
        peft_config=None,
        tools=None,
        rollout_func=None,
        environment_factory=None,
    ):
        # The parameter list is GRPOTrainer.__init__'s, in its order, so positional calls mean the same thing.
        if isinstance(model, str) and model.startswith("builtin:"):
            model = resolve_model_path(model)  # the project's offline models (builtin:tiny, …), as every command
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = SDARConfig(f"{model_name.split('/')[-1]}-SDAR")
        elif not isinstance(args, SDARConfig):
            kind = type(args).__name__ if isinstance(args, GRPOConfig) else repr(type(args))
            raise TypeError(f"SDARTrainer needs `args` to be a trl_sdar.SDARConfig, got {kind}; use SDARConfig.")
        if getattr(rollout_func, "rollout_unit", "episode") == "turn":
            _check_turn_rewards(reward_funcs, args)
        check_launched_processes(args)  # N launched processes must train together, not N times alone
        if args.student_share_prefix and args.world_size > 1:  # before the model loads
            raise ValueError(
                f"SDARConfig.student_share_prefix=True runs on one process only (this run has {args.world_size}): "
                "each process would make a data-dependent number of forwards before one backward; set it to False."
            )
        super().__init__(
            model,
            reward_funcs,
            args,
            train_dataset,
            eval_dataset,
            processing_class,
            reward_processing_classes,
            callbacks,
            optimizers,
            quantization_config,
            peft_config,
            tools,
            rollout_func,
            environment_factory,
        )
        self.add_callback(MetricsJSONLCallback())  # <output_dir>/metrics.jsonl, appended as logged
        self.add_callback(SkipNonFiniteSteps(self))  # a NaN/inf gradient skips the optimizer step
        warn_if_sharding_dropped(self.accelerator)
        if self._turn_rows and args.max_tokens_per_backward is None:
            logger.warning(
                "rollout_unit='turn' with max_tokens_per_backward=None: a micro-batch holds one row per turn of its "
                "episodes and runs as one forward/backward pass, so memory grows with episode length (one SmolLM2 "
                "step over 20 turn rows of 1k tokens took 22 GB on CPU). Set max_tokens_per_backward, e.g. 8192."
            )
        if self._turn_rows:
            widen_tables(self, rows_per_prompt=self.rollout_func.max_turns)  # one table row per turn row
        if self._turn_rows and args.top_entropy_quantile < 1.0:
            raise ValueError(
                f"SDARConfig.top_entropy_quantile={args.top_entropy_quantile!r} is not supported with "
                "rollout_unit='turn' (its token masks are per micro-batch, turn rows rescale them); use 1.0."
            )
        self._capture_student_logps = False
        self._student_logps: torch.Tensor | None = None
        self._student_entropies: torch.Tensor | None = None
        self._warned: set[str] = set()
        self._share_student_prefix = args.student_share_prefix and self._prefix_sharing_supported("student")
        self.teacher: Teacher | None = None
        self._share_teacher_prefix = False
        if args.sdar_coef > 0 or args.distill_loss_type == "rlsd":
            self.teacher = Teacher(
                self.accelerator.unwrap_model(self.model), args, accelerator=self.accelerator, ref_model=self.ref_model
            )
            if args.teacher_model_kind == "ema":
                self.add_callback(_EMATeacherCallback(self.teacher))
                if self.use_vllm:  # vLLM gets the policy's weights, never the teacher adapter's module copies
                    sync_policy_only(self.vllm_generation, self.teacher.model)
            self._bos_token_id = prompt_bos_token_id(self._tokenizer)
            self._context_tokenizer = ContextTokenizer(
                self._tokenizer, placement=args.teacher_context_placement, header=args.teacher_context_header
            )
            self._share_teacher_prefix = args.teacher_share_prefix and self._prefix_sharing_supported("teacher")
            collective = sharding_of(self.accelerator) in COLLECTIVE_FORWARD
            self._most_forwards = most_over_processes(self.accelerator) if collective else None

    def _prefix_sharing_supported(self, who: str) -> bool:
        reason = prefix_sharing_unsupported_reason(self.accelerator.unwrap_model(self.model))
        if reason is not None:
            logger.warning(
                f"{who}_share_prefix=True is not available for this model ({reason}); the {who} scores every row "
                "unshared."
            )
        return reason is None

    # ------------------------------------------------------------------------------------------------ checkpoints
    def _save_optimizer_and_scheduler(self, output_dir):
        super()._save_optimizer_and_scheduler(output_dir)
        save_training_state(self, output_dir)  # the EMA teacher and buffered rollouts, like the optimizer state

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            load_training_state(self, checkpoint)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        check_finite_weights(self, output_dir)  # never save NaN/inf weights (the final model or a checkpoint)
        super().save_model(output_dir, _internal_call)

    # ----------------------------------------------------------------------------------------------- rollout time
    @property
    def _turn_rows(self) -> bool:
        return getattr(self.rollout_func, "rollout_unit", "episode") == "turn"

    def _generate_and_score_completions(self, inputs):
        if self._turn_rows:
            output, inputs = self._generate_and_score_turn_rows(inputs)
        else:
            output = super()._generate_and_score_completions(inputs)
        if self.teacher is None:
            return output
        if "pixel_values" in output:
            raise ValueError("SDARTrainer does not support vision inputs for the teacher; set sdar_coef=0.")
        # TRL merged every rollout_func extra field into `inputs`, so dataset columns and extras are read alike.
        column = self.args.teacher_context_column
        if inputs and "no_column" not in self._warned and not any(column in row for row in inputs):
            self._warned.add("no_column")
            logger.warning(
                f"No row of this batch has the column {column!r} (SDARConfig.teacher_context_column), so nothing is "
                f"distilled and this is plain GRPO. Available fields: {sorted(inputs[0])}. Fix the column name, keep "
                "remove_unused_columns=False, and put the column in the dataset (or return it from rollout_func)."
            )
        contexts = [self._context_tokenizer(row.get(column)) for row in inputs]
        prompts = build_teacher_prompts(
            output["prompt_ids"],
            output["prompt_mask"],
            contexts,
            pad_token_id=self._tokenizer.pad_token_id,
            max_length=self.args.teacher_max_prompt_length,
            bos_token_id=self._bos_token_id,
        )
        log_context_metrics(self, prompts, [c is not None for c in contexts])
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

    def _generate_and_score_turn_rows(self, inputs):
        """Play the episodes, pad to an even row count, score the rows through TRL, set turn-row advantages."""
        mode = "train" if self.model.training else "eval"
        if self.use_vllm and self.state.global_step != self._last_loaded_step:
            self.vllm_generation.sync_weights()  # TRL syncs in `_generate`, after our episodes: sync before them
            self._last_loaded_step = self.state.global_step
        rows = play_turn_rows(self, inputs, mode)
        saved, self.rollout_func = self.rollout_func, lambda prompts, trainer: rows.replay
        try:
            with padding_rows_unrewarded():
                output = super()._generate_and_score_completions(rows.row_inputs)
        finally:
            self.rollout_func = saved
        set_turn_advantages(self, rows, output, mode)
        return output, rows.row_inputs

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
        student, teacher, _, finite = finite_only(student, output["teacher_per_token_logps"], None)
        lam = rlsd_lambda(self.state.global_step) * output["sdar_row_mask"].unsqueeze(1) * finite  # (B, C)
        reshaped = rlsd_advantages(output["advantages"], teacher, student, lam=1.0)
        plain = output["advantages"].unsqueeze(1)
        output["advantages"] = (1 - lam) * plain + lam * reshaped

    def _teacher_logps(self, inputs, batch_size: int | None = None) -> torch.Tensor:
        """Teacher log-probs of the completion tokens, (B, C), through the student's own log-prob path. Only rows
        with a teacher context are scored (`sdar_row_mask`); the others (no context, turn-row padding), which the
        loss never reads, get 0."""
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        prompt_ids, prompt_mask = inputs["teacher_prompt_ids"], inputs["teacher_prompt_mask"]
        rows = inputs["sdar_row_mask"].bool().nonzero().squeeze(1)  # (R,)
        batch_size = batch_size or completion_ids.size(0)
        logps = torch.zeros(completion_ids.shape, dtype=torch.float32, device=completion_ids.device)  # (B, C)
        gc_kwargs = self.args.gradient_checkpointing_kwargs
        with torch.no_grad(), disable_gradient_checkpointing(self.model, gc_kwargs), compact_cpu_head():
            with self.teacher.scoring(self.model) as teacher_model:
                if self._share_teacher_prefix and len(rows):  # each distinct prefix encoded once (prefix_scoring.py)
                    scored = shared_prefix_logps(
                        teacher_model,
                        prompt_ids[rows],
                        prompt_mask[rows],
                        completion_ids[rows],
                        completion_mask[rows],
                        batch_size=batch_size,
                        autocast=self.accelerator.autocast,
                        most_forwards=self._most_forwards,  # ZeRO-3 / FSDP: as many forwards on every process
                    )
                else:  # one forward per `batch_size` rows; a sharded model first joins the others' extra forwards
                    own = -(-len(rows) // batch_size)
                    keep_in_step(teacher_model, own, self._most_forwards, prompt_ids, self.accelerator.autocast)
                    scored = logps[:0]
                    if own:
                        input_ids = torch.cat([prompt_ids[rows], completion_ids[rows]], dim=1)
                        attention_mask = torch.cat([prompt_mask[rows], completion_mask[rows]], dim=1)
                        scored, _, _ = self._get_per_token_logps_and_entropies(
                            teacher_model, input_ids, attention_mask, completion_ids.size(1), batch_size=batch_size
                        )
        logps[rows] = scored.to(logps.dtype)
        return logps

    # -------------------------------------------------------------------------------------------------- loss time
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Turn rows: run a micro-batch as several `max_tokens_per_backward`-bounded passes (`turns/passes.py`)."""
        if "num_rows_in_batch" not in inputs or self.args.max_tokens_per_backward is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        return backward_in_passes(self, super().compute_loss, model, inputs, return_outputs, num_items_in_batch)

    def _get_per_token_logps_and_entropies(self, model, input_ids, *args, **kwargs):
        with compact_cpu_head():  # CPU: TRL's fused head scores only the completion tokens (cpu_head.py)
            if self._share_student_prefix:
                output = self._shared_prefix_pass(model, input_ids, *args, **kwargs)
            else:
                output = super()._get_per_token_logps_and_entropies(model, input_ids, *args, **kwargs)
        if self._capture_student_logps:
            self._student_logps = output[0]  # (B, C), with gradient: reused by the SDAR term
            self._student_entropies = output[1]
        return output

    def _shared_prefix_pass(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                            compute_entropy=False, compute_aux_loss=False, **extra):  # fmt: skip
        """TRL's pass, each shared prompt prefix encoded once (`student_share_prefix`, text models)."""
        if compute_aux_loss or any(value is not None for value in extra.values()):
            raise ValueError(
                "SDARConfig.student_share_prefix=True scores text-only dense models; this batch has "
                f"{sorted(k for k, v in extra.items() if v is not None) or ['an MoE aux loss']}: set it to False."
            )
        prompt, completion = input_ids[:, :-logits_to_keep], input_ids[:, -logits_to_keep:]
        logps, entropies = shared_prefix_scores(
            model,
            prompt,
            attention_mask[:, :-logits_to_keep],
            completion,
            attention_mask[:, -logits_to_keep:],
            batch_size=batch_size or input_ids.size(0),
            autocast=self.accelerator.autocast,
            entropies=compute_entropy,
        )
        return logps, entropies, None

    def _compute_loss(self, model, inputs):
        factor = turn_factor(self, inputs)
        entropy_coef = applied_entropy_coef(self)  # read before TRL's adaptive controller may move it
        self._capture_student_logps = True
        try:
            loss = super()._compute_loss(model, inputs)
        finally:
            self._capture_student_logps = False
        student_logps, self._student_logps = self._student_logps, None
        entropies, self._student_entropies = self._student_entropies, None
        if "num_rows_in_batch" in inputs:
            loss = rescale_turn_rows(self, loss, inputs, factor, entropies, entropy_coef)
        if self.teacher is None:
            return loss
        # rl_loss_coef 0 (OPSD) leaves the GRPO term out entirely: 0 * NaN would still be NaN
        loss = self.args.rl_loss_coef * loss if self.args.rl_loss_coef != 0 else torch.zeros_like(loss.detach())
        teacher_logps = inputs.get("teacher_per_token_logps")
        if teacher_logps is None:
            teacher_logps = self._teacher_logps(inputs)
        mask = trained_mask(inputs)  # environment / tool tokens are never trained nor distilled
        row_mask = inputs["sdar_row_mask"].unsqueeze(1)  # (B, 1): rows without a teacher contribute zero
        kind = self.args.distill_loss_type
        old = inputs.get("old_per_token_logps", student_logps.detach()) if kind == "skill_sd" else None
        student_logps, teacher_logps, old, finite = finite_only(student_logps, teacher_logps, old)
        nonfinite = (~finite & (mask * row_mask).bool()).sum()  # trained tokens dropped for NaN/inf log-probs
        mask = mask * finite  # (B, C): out of the SDAR term, its normaliser and its metrics
        if kind == "sdar":
            beta = self.args.sdar_gate_beta
            per_token, gate, gap = sdar_per_token_loss(student_logps, teacher_logps, gate_beta=beta)
        elif kind == "naive":
            per_token, gate, gap = naive_opsd_per_token_loss(student_logps, teacher_logps)
        elif kind == "skill_sd":
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
        log_gate_metrics(self, mode, per_token, gate, gap, mask * row_mask, nonfinite)
        return loss + self.args.sdar_coef * factor * sdar_loss
