"""`SDARTrainer`: TRL's `GRPOTrainer` plus SDAR's gated on-policy self-distillation term (METHOD.md §2–3).

Only plumbing lives here; the math is in `losses.py`, the teacher prompt assembly and teacher weights in
`teacher.py`.
"""

from __future__ import annotations

import logging

import torch
from accelerate.utils import DistributedType
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import get_config_model_id

from trl_sdar.method.checkpoint import load_training_state, save_training_state
from trl_sdar.method.config import SDARConfig
from trl_sdar.method.cpu_head import enable_compact_cpu_head
from trl_sdar.method.losses import (
    aggregate_like_grpo,
    naive_opsd_per_token_loss,
    rlsd_advantages,
    rlsd_lambda,
    sdar_per_token_loss,
    skill_sd_per_token_loss,
    turn_loss_factor,
)
from trl_sdar.method.metrics_log import MetricsJSONLCallback
from trl_sdar.method.prefix_scoring import prefix_sharing_unsupported_reason, shared_prefix_logps
from trl_sdar.method.teacher import ContextTokenizer, Teacher, build_teacher_prompts, prompt_bos_token_id
from trl_sdar.method.turns.advantages import padded_row_count, row_multiple, turn_advantages, zero_spread_share
from trl_sdar.method.turns.passes import chunk_slices, chunks_needed, slice_rows

logger = logging.getLogger(__name__)


class _EMATeacherCallback(TrainerCallback):
    """Moves the `ema` teacher towards the policy after every optimizer step."""

    def __init__(self, teacher: Teacher):
        self.teacher = teacher

    def on_step_end(self, args, state, control, **kwargs):
        self.teacher.ema_update()


def _finite_only(student: torch.Tensor, teacher: torch.Tensor, old: torch.Tensor | None):
    """Zero every (B, C) log-prob where any of them is NaN/inf, so neither the SDAR loss nor its gradient is NaN;
    returns the cleaned tensors and the (B, C) bool mask of finite tokens."""
    finite = torch.isfinite(student) & torch.isfinite(teacher)
    if old is not None:
        finite &= torch.isfinite(old)
        old = torch.where(finite, old, torch.zeros_like(old))
    student = torch.where(finite, student, torch.zeros_like(student))  # no gradient flows to a dropped token
    teacher = torch.where(finite, teacher, torch.zeros_like(teacher))
    return student, teacher, old, finite


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
    * `_compute_loss`: adds `λ · L_SDAR`, reduced with the normaliser of the configured GRPO `loss_type`, and logs
      `sdar/*` metrics over trained tokens (environment tokens and padding excluded), gathered across processes.
      Tokens whose teacher or student log-prob is NaN/inf are left out of the term and its metrics and counted in
      `sdar/nonfinite_tokens`.

    Turn rows (`EnvRollout` with `rollout_unit="turn"`, the paper's loop): an episode gives one row per model turn,
    so a batch has more rows than prompts, a varying number per process. `_generate_and_score_completions` plays the
    episodes first, pads every process to the same row count (padding rows carry no trained token), hands the rows to
    TRL's scoring as if each were a prompt, then replaces the advantages with the reference's turn-row GRPO
    advantages. `compute_loss` splits a micro-batch into `max_tokens_per_backward`-bounded passes, and each
    reduction is rescaled (`losses.turn_loss_factor`) so every `loss_type` weighs rows and tokens as over the whole
    generation batch.

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
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = SDARConfig(f"{model_name.split('/')[-1]}-SDAR")
        elif not isinstance(args, SDARConfig):
            kind = type(args).__name__ if isinstance(args, GRPOConfig) else repr(type(args))
            raise TypeError(f"SDARTrainer needs `args` to be a trl_sdar.SDARConfig, got {kind}; use SDARConfig.")
        enable_compact_cpu_head()  # CPU: TRL's fused head scores only the completion tokens (see cpu_head.py)
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
        if self._turn_rows and args.max_tokens_per_backward is None:
            logger.warning(
                "rollout_unit='turn' with max_tokens_per_backward=None: a micro-batch holds one row per turn of its "
                "episodes and runs as one forward/backward pass, so memory grows with episode length (one SmolLM2 "
                "step over 20 turn rows of 1k tokens took 22 GB on CPU). Set max_tokens_per_backward, e.g. 8192."
            )
        if self._turn_rows and args.top_entropy_quantile < 1.0:
            raise ValueError(
                f"SDARConfig.top_entropy_quantile={args.top_entropy_quantile!r} is not supported with "
                "rollout_unit='turn' (its token masks are per micro-batch, turn rows rescale them); use 1.0."
            )
        self._capture_student_logps = False
        self._student_logps: torch.Tensor | None = None
        self._student_entropies: torch.Tensor | None = None
        self._warned: set[str] = set()
        self.teacher: Teacher | None = None
        self._share_teacher_prefix = False
        if args.sdar_coef > 0 or args.distill_loss_type == "rlsd":
            self.teacher = Teacher(
                self.accelerator.unwrap_model(self.model), args, accelerator=self.accelerator, ref_model=self.ref_model
            )
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

    # ------------------------------------------------------------------------------------------------ checkpoints
    def _save_optimizer_and_scheduler(self, output_dir):
        super()._save_optimizer_and_scheduler(output_dir)
        save_training_state(self, output_dir)  # the EMA teacher and buffered rollouts, like the optimizer state

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            load_training_state(self, checkpoint)

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

    def _generate_and_score_turn_rows(self, inputs):
        """Play the episodes, pad to an even row count, score the rows through TRL, set turn-row advantages."""
        mode = "train" if self.model.training else "eval"
        if self.use_vllm and self.state.global_step != self._last_loaded_step:
            self.vllm_generation.sync_weights()  # TRL syncs in `_generate`, after our episodes: sync before them
            self._last_loaded_step = self.state.global_step
        episodes = self.rollout_func.play([x["prompt"] for x in inputs], self)
        rows = self.rollout_func.turn_rows(episodes, with_logprobs=self.use_vllm)
        real = len(rows["prompt_ids"])
        counts = self.accelerator.gather(torch.tensor([real], device=self.accelerator.device)).tolist()
        generations = self.num_generations if mode == "train" else self.num_generations_eval
        spg = self.args.steps_per_generation if mode == "train" else 1
        target = padded_row_count(counts, row_multiple(spg, generations, self.accelerator.num_processes))
        first = self.accelerator.process_index * len(inputs)  # global index of this process's first episode
        row_inputs = [{**inputs[i], **{k: v[j] for k, v in rows.items() if k != "logprobs"}}
                      for j, i in enumerate(rows["episode_index"])]  # fmt: skip
        padding = self._padding_row({**inputs[0], **{key: None for key in rows}})
        row_inputs += [dict(padding) for _ in range(target - real)]
        replay = {key: [r[key] for r in row_inputs] for key in ("prompt_ids", "completion_ids", "env_mask")}
        replay["logprobs"] = None if rows["logprobs"] is None else rows["logprobs"] + [[0.0]] * (target - real)
        # GRPO group = the num_generations consecutive prompts of one task (TRL's sampler), episode = its prompt
        local = [((first + i) // generations, first + i, r) for i, r in zip(rows["episode_index"], rows["env_reward"])]
        saved, self.rollout_func = self.rollout_func, lambda prompts, trainer: replay
        try:
            output = super()._generate_and_score_completions(row_inputs)
        finally:
            self.rollout_func = saved
        offset = sum(counts[: self.accelerator.process_index])
        output["advantages"] = self._turn_advantages(local, offset, target, output["advantages"])
        total_rows = sum(counts)
        output["num_rows_in_batch"] = torch.tensor(float(total_rows), device=self.accelerator.device)
        self._metrics[mode]["turn/rows"].append(total_rows / self.accelerator.num_processes)
        self._metrics[mode]["turn/padding_rows"].append(float(target * len(counts) - total_rows))
        self._metrics[mode]["turn/trained_tokens"].append(float(output["num_items_in_batch"]))
        return output, row_inputs

    def _padding_row(self, template: dict) -> dict:
        """A row that trains nothing: one prompt and one completion token, both masked out of every loss."""
        pad = self._tokenizer.pad_token_id
        row = {**template, "prompt_ids": [pad], "completion_ids": [self._tokenizer.eos_token_id], "env_mask": [0]}
        return {**row, "env_reward": None, self.args.teacher_context_column: None}

    def _turn_advantages(self, local: list[tuple], offset: int, target: int, like: torch.Tensor) -> torch.Tensor:
        """The reference's GRPO advantages over the turn rows of all processes (`local`: this process's (group,
        episode, reward) rows, which start at row `offset` of the gathered list); 0 for the padding rows."""
        from accelerate.utils import gather_object

        everything = gather_object(local)
        groups, episodes, scores = zip(*everything, strict=True) if everything else ((), (), ())
        over = self.rollout_func.settings.advantage_over
        advantages = turn_advantages(scores, groups, episodes, over=over, scale=self.scale_rewards)
        mode = "train" if self.model.training else "eval"
        if self._metrics[mode]["frac_reward_zero_std"]:  # TRL's value, over its own grouping of the rows: replace it
            self._metrics[mode]["frac_reward_zero_std"][-1] = zero_spread_share(scores, groups, episodes, over=over)
        mine = torch.zeros(target, dtype=like.dtype, device=like.device)
        mine[: len(local)] = advantages[offset : offset + len(local)].to(like.device)
        return mine

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
        student, teacher, _, finite = _finite_only(student, output["teacher_per_token_logps"], None)
        lam = rlsd_lambda(self.state.global_step) * output["sdar_row_mask"].unsqueeze(1) * finite  # (B, C)
        reshaped = rlsd_advantages(output["advantages"], teacher, student, lam=1.0)
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
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Turn rows: run a micro-batch as several `max_tokens_per_backward`-bounded passes (the same number on every
        process); all but the last are back-propagated here, the last by the Trainer as usual."""
        if "num_rows_in_batch" not in inputs or self.args.max_tokens_per_backward is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        rows = inputs["prompt_ids"].size(0)
        width = inputs["prompt_ids"].size(1) + inputs["completion_ids"].size(1)
        local = chunks_needed(rows, width, self.args.max_tokens_per_backward)
        passes = int(self.accelerator.gather(torch.tensor([local], device=self.accelerator.device)).max().item())
        *earlier, last = chunk_slices(rows, passes)
        done = None
        for part in earlier:
            loss = super().compute_loss(model, slice_rows(inputs, part, rows), return_outputs, num_items_in_batch)
            if self.accelerator.distributed_type == DistributedType.DEEPSPEED:  # no optimizer step inside a pass
                self.accelerator.deepspeed_engine_wrapped.backward(loss, sync_gradients=False, scale_wrt_gas=False)
            else:
                self.accelerator.backward(loss)
            done = loss.detach() if done is None else done + loss.detach()
        loss = super().compute_loss(model, slice_rows(inputs, last, rows), return_outputs, num_items_in_batch)
        return loss if done is None else loss + done  # the detached part only completes the logged value

    def _get_per_token_logps_and_entropies(self, model, input_ids, *args, **kwargs):
        output = super()._get_per_token_logps_and_entropies(model, input_ids, *args, **kwargs)
        if self._capture_student_logps:
            self._student_logps = output[0]  # (B, C), with gradient: reused by the SDAR term
            self._student_entropies = output[1]
        return output

    def _compute_loss(self, model, inputs):
        factor = self._turn_factor(inputs)
        entropy_coef = self._applied_entropy_coef()  # read before TRL's adaptive controller may move it
        self._capture_student_logps = True
        try:
            loss = super()._compute_loss(model, inputs)
        finally:
            self._capture_student_logps = False
        student_logps, self._student_logps = self._student_logps, None
        entropies, self._student_entropies = self._student_entropies, None
        if "num_rows_in_batch" in inputs:
            loss = self._rescale_turn_rows(loss, inputs, factor, entropies, entropy_coef)
        if self.teacher is None:
            return loss
        loss = self.args.rl_loss_coef * loss
        teacher_logps = inputs.get("teacher_per_token_logps")
        if teacher_logps is None:
            teacher_logps = self._teacher_logps(inputs)
        mask = self._trained_mask(inputs)  # environment / tool tokens are never trained nor distilled
        row_mask = inputs["sdar_row_mask"].unsqueeze(1)  # (B, 1): rows without a teacher contribute zero
        kind = self.args.distill_loss_type
        old = inputs.get("old_per_token_logps", student_logps.detach()) if kind == "skill_sd" else None
        student_logps, teacher_logps, old, finite = _finite_only(student_logps, teacher_logps, old)
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
        self._log_gate_metrics(mode, per_token, gate, gap, mask * row_mask, nonfinite)
        return loss + self.args.sdar_coef * factor * sdar_loss

    def _trained_mask(self, inputs) -> torch.Tensor:
        mask = inputs["completion_mask"]
        return mask * inputs["tool_mask"] if "tool_mask" in inputs else mask

    def _turn_factor(self, inputs, loss_type: str | None = None) -> float:
        """`losses.turn_loss_factor` of this chunk for turn rows (1.0 otherwise); `loss_type` defaults to GRPO's."""
        if "num_rows_in_batch" not in inputs:
            return 1.0
        return turn_loss_factor(
            loss_type or self.loss_type,
            rows=inputs["prompt_ids"].size(0),
            tokens=float(self._trained_mask(inputs).sum()),
            rows_in_batch=float(inputs["num_rows_in_batch"]),
            tokens_in_batch=float(inputs["num_items_in_batch"]),
            num_processes=self.accelerator.num_processes,
            steps_per_generation=self.args.steps_per_generation if self.model.training else 1,
        )

    def _applied_entropy_coef(self) -> float:
        """The entropy coefficient TRL applies in this micro-batch (its adaptive controller gates it)."""
        if not self._entropy_bonus_enabled:
            return 0.0
        if self.use_adaptive_entropy and self._last_world_entropy > self.args.entropy_target:
            return 0.0
        return self.entropy_coef

    def _rescale_turn_rows(self, loss, inputs, factor: float, entropies, entropy_coef: float):
        """TRL's loss of a chunk of turn rows → its exact share of the generation batch's loss: the policy part by
        `factor`, the entropy bonus as a token mean over the whole batch."""
        if entropy_coef == 0.0:
            return factor * loss
        mask = self._trained_mask(inputs).to(entropies.dtype)
        accumulation = self.current_gradient_accumulation_steps if self.model.training else 1
        bonus = (entropies * mask).sum() / mask.sum().clamp(min=1.0) / accumulation  # exactly TRL's term
        entropy_factor = self._turn_factor(inputs, "bnpo")  # a token mean: the bnpo share of the batch
        return factor * (loss + entropy_coef * bonus) - entropy_factor * entropy_coef * bonus

    def _log_gate_metrics(self, mode: str, per_token, gate, gap, mask, nonfinite: torch.Tensor) -> None:
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
        gate_sum, active, gap_sum, loss_sum, count, bad = self.accelerator.reduce(local, reduction="sum").tolist()
        self._metrics[mode]["sdar/nonfinite_tokens"].append(bad)
        if bad and "nonfinite" not in self._warned:
            self._warned.add("nonfinite")
            logger.warning(
                f"{int(bad)} trained token(s) have NaN/inf teacher or student log-probs; they are left out of the "
                "SDAR term and its metrics (counted in sdar/nonfinite_tokens). Check the teacher's dtype and weights."
            )
        if count == 0:
            return  # no distilled token in this micro-batch anywhere: nothing to average
        self._metrics[mode]["sdar/gate_mean"].append(gate_sum / count)
        self._metrics[mode]["sdar/gate_active_ratio"].append(active / count)
        self._metrics[mode]["sdar/teacher_gap_mean"].append(gap_sum / count)
        self._metrics[mode]["sdar/loss"].append(loss_sum / count)
        self._metrics[mode]["sdar/distilled_tokens"].append(count)
