"""`SDARConfig`: `GRPOConfig` plus the fields of SDAR's gated self-distillation term (METHOD.md §2–3)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from trl import GRPOConfig

TEACHER_MODEL_KINDS = ("live", "base", "ema")
CONTEXT_PLACEMENTS = ("prefix", "system")
DISTILL_LOSS_TYPES = ("sdar", "naive", "skill_sd", "rlsd")


def _check_choice(name: str, value: object, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"SDARConfig.{name}={value!r} is not valid; expected one of {list(valid)}.")


def _check_finite(config) -> None:
    """Every float field (SDAR's and GRPO's) and float list must be finite: `sdar_coef=inf` used to train to NaN
    weights and save them with exit status 0."""
    for f in fields(config):
        value = getattr(config, f.name)
        numbers = value if isinstance(value, list | tuple) else [value]
        if any(isinstance(x, float) and not math.isfinite(x) for x in numbers):
            raise ValueError(f"SDARConfig.{f.name}={value!r} is not valid; expected a finite number.")


def adopt_activation_checkpointing(config) -> None:
    """Carry `gradient_checkpointing` over to transformers' new name `activation_checkpointing` (where the installed
    transformers has it) before `TrainingArguments.__post_init__`, which warns (FutureWarning) for every config that
    sets only the old name: TRL's configs do by default, and recipes written for TRL do."""
    if getattr(config, "activation_checkpointing", False) is None and config.gradient_checkpointing is not None:
        config.activation_checkpointing = config.gradient_checkpointing


def _check_counts(config) -> None:
    """Values that GRPOConfig divides by or that the Trainer reads another way than written (checked before
    GRPOConfig's own checks, which would fail with a ZeroDivisionError)."""
    if config.num_generations is not None and config.num_generations < 2:
        raise ValueError(
            f"SDARConfig.num_generations={config.num_generations!r} is not valid; expected an integer >= 2 "
            "(GRPO compares the completions of one prompt)."
        )
    if config.max_steps == 0 or config.max_steps < -1:
        raise ValueError(
            f"SDARConfig.max_steps={config.max_steps!r} is not valid; expected -1 (train for num_train_epochs) or "
            "an integer >= 1."
        )
    if config.learning_rate < 0:
        raise ValueError(f"SDARConfig.learning_rate={config.learning_rate!r} is not valid; expected a number >= 0.")


@dataclass
class SDARConfig(GRPOConfig):
    r"""
    Configuration class for [`SDARTrainer`]: every [`~trl.GRPOConfig`] field with its GRPO default, plus the fields
    below. With `sdar_coef=0.0` training is exactly GRPO.

    Parameters:
        > Parameters that control the distillation term

        sdar_coef (`float`, *optional*, defaults to `0.01`):
            λ in `L = L_GRPO + λ · L_SDAR`. The paper uses 0.01 in every run, with no schedule. `0.0` turns the
            teacher off entirely (no teacher forward pass).
        sdar_gate_beta (`float`, *optional*, defaults to `5.0`):
            β of the gate `g_t = σ(β · Δ_t)` on the detached teacher–student gap `Δ_t = u_t − s_t`. `0.0` gives a
            constant gate of 0.5 (the reference code's "naive" GRPO+OPSD).
        distill_loss_type (`str`, *optional*, defaults to `"sdar"`):
            The teacher term, which makes every baseline of the paper one value away (METHOD.md §5):
            `"sdar"`: the gated term `g_t · (sg(u_t) − s_t)` (pushes sampled tokens up only). `"naive"`: the ungated
            signed sampled-token reverse-KL surrogate `−sg(Δ_t) · s_t`, which also pushes teacher-rejected tokens down
            (the unstable GRPO+OPSD baseline). `"skill_sd"`: `ρ_t · k3_t` with the k3 KL estimator (Skill-SD; the
            paper's coefficient is 0.001). `"rlsd"`: no extra loss; the token advantages are reshaped by the teacher
            gap (RLSD, λ_t = 0.5·(1 − step/100)); `sdar_coef` only switches the teacher on.
        rl_loss_coef (`float`, *optional*, defaults to `1.0`):
            Weight of the whole GRPO loss (policy, KL and entropy terms). `0.0` with `sdar_coef > 0` is the OPSD
            baseline: the distillation term alone.

        > Parameters that control the teacher

        teacher_model_kind (`str`, *optional*, defaults to `"live"`):
            `"live"`: the current policy (with LoRA: the trained adapter) scores the tokens. `"base"`: the fixed
            initial policy (with LoRA: adapters disabled; without PEFT: a frozen copy, which costs one model of
            memory). `"ema"`: an exponential moving average of the policy (with LoRA: a separate frozen adapter
            named `"teacher"`; without PEFT: a frozen copy).
        teacher_update_rate (`float`, *optional*, defaults to `0.05`):
            EMA rate r of the `"ema"` teacher after every optimizer step: `θ_T ← (1 − r) θ_T + r θ`.
        teacher_context_column (`str`, *optional*, defaults to `"privileged_context"`):
            Dataset column, or extra field returned by a `rollout_func`, holding each row's privileged context (a
            string or a list of chat messages). Rows where it is missing, `None` or empty get no distillation.
        teacher_context_placement (`str`, *optional*, defaults to `"prefix"`):
            Where a text context goes in the teacher prompt: `"prefix"` puts `teacher_context_header + context +
            "\n\n"` as raw tokens before the student's prompt (the paper's placement); `"system"` renders it as a
            system message with the chat template, placed before the student's prompt. Message-list contexts are
            always rendered with the chat template.
        teacher_context_header (`str`, *optional*, defaults to `"[Privileged Skill Information]\n"`):
            Text put before a text context.
        teacher_max_prompt_length (`int` or `None`, *optional*, defaults to `None`):
            Token limit of the teacher prompt (context + student prompt). When exceeded, the oldest student-prompt
            tokens are dropped and the context is kept whole; a row whose context alone reaches the limit gets no
            distillation. Both are counted in the metrics (`sdar/context_truncated`, `sdar/rows_without_teacher`).
        teacher_logps_per_microbatch (`bool`, *optional*, defaults to `False`):
            Compute the teacher log-probs in every micro-batch's loss step (with the weights of that moment) instead
            of once per generation batch at rollout time (the paper's teacher).
        teacher_share_prefix (`bool`, *optional*, defaults to `True`):
            Encode each distinct leading run of teacher-prompt tokens (the privileged context, and the prompt where
            rows share it, as the generations of one prompt do) once per batch and score every row's remaining tokens
            against its keys and values, instead of scoring every row from scratch. Same log-probs up to float
            rounding, at the cost of the unique tokens. Models with sliding-window or linear-attention layers always
            use the unshared pass (with a warning). `False` scores every row unshared (the reference).

        student_share_prefix (`bool`, *optional*, defaults to `False`):
            The same sharing for the student's scoring passes, the one that trains included: rows whose prompts start
            alike (the generations of one prompt; in `turn` mode, the turns of a group that share their step prompt)
            encode that prefix once, and each row's gradient flows through the shared keys and values as it would
            through its own. Same log-probs and gradients up to float rounding (tested), and far fewer tokens where
            prompts are long next to completions. One process only, without gradient checkpointing (checked);
            `False` is TRL's pass.

        generation_share_prefix (`bool`, *optional*, defaults to `True`):
            Agent rollouts with the model's own `generate` (no vLLM): on a rollout's first call, prefill each prompt
            that several episodes start with (a task's generations) once and copy its keys/values under each of
            them. Same tokens sampled as the full prefill (tested). `False` prefills every row in full.

        > Parameters that control training on turn rows (`rollout_unit: turn`)

        max_tokens_per_backward (`int` or `None`, *optional*, defaults to `None`):
            Bound on the padded tokens (rows × (prompt + completion width)) of one forward/backward pass. A
            micro-batch that holds more is split into several passes whose losses sum exactly to the micro-batch's
            (every process runs the same number of passes). `None`: one pass per micro-batch, as TRL does.
    """

    sdar_coef: float = field(
        default=0.01,
        metadata={"help": "λ, weight of the SDAR distillation term (paper: 0.01). 0 = plain GRPO, no teacher pass."},
    )
    sdar_gate_beta: float = field(
        default=5.0,
        metadata={"help": "β of the sigmoid gate σ(β·(u−s)) on the detached teacher–student gap (paper: 5.0)."},
    )
    distill_loss_type: str = field(
        default="sdar",
        metadata={"help": "Teacher term: sdar (gated) | naive (GRPO+OPSD) | skill_sd (k3) | rlsd (advantages)."},
    )
    rl_loss_coef: float = field(
        default=1.0,
        metadata={"help": "Weight of the GRPO loss; 0 with sdar_coef > 0 is the OPSD baseline (distillation only)."},
    )
    teacher_model_kind: str = field(
        default="live",
        metadata={"help": "Teacher weights: 'live' (current policy), 'base' (initial policy), 'ema' (EMA of policy)."},
    )
    teacher_update_rate: float = field(
        default=0.05,
        metadata={"help": "EMA rate of the 'ema' teacher per optimizer step, in (0, 1]."},
    )
    teacher_context_column: str = field(
        default="privileged_context",
        metadata={"help": "Dataset column or rollout_func field with each row's privileged context."},
    )
    teacher_context_placement: str = field(
        default="prefix",
        metadata={"help": "Text context placement: 'prefix' (raw tokens before the prompt) or 'system' message."},
    )
    teacher_context_header: str = field(
        default="[Privileged Skill Information]\n",
        metadata={"help": "Text put before a text context in the teacher prompt."},
    )
    teacher_max_prompt_length: int | None = field(
        default=None,
        metadata={"help": "Teacher prompt token limit; the student prompt is trimmed first, never the context."},
    )
    teacher_logps_per_microbatch: bool = field(
        default=False,
        metadata={"help": "Recompute teacher log-probs in each micro-batch instead of once per generation batch."},
    )
    teacher_share_prefix: bool = field(
        default=True,
        metadata={"help": "Encode each shared teacher-prompt prefix once and score every row against it."},
    )

    student_share_prefix: bool = field(
        default=False,
        metadata={"help": "Student passes encode each shared prompt prefix once (gradient included); one process."},
    )

    generation_share_prefix: bool = field(
        default=True,
        metadata={"help": "Rollouts with HF generate prefill each prompt several episodes share once."},
    )

    max_tokens_per_backward: int | None = field(
        default=None,
        metadata={"help": "Max padded tokens per forward/backward pass (splits long turn-row micro-batches)."},
    )

    def __post_init__(self):
        _check_finite(self)
        _check_counts(self)
        adopt_activation_checkpointing(self)
        super().__post_init__()
        if not self.sdar_coef >= 0.0:
            raise ValueError(f"SDARConfig.sdar_coef={self.sdar_coef!r} is not valid; expected a number >= 0.")
        if not self.sdar_gate_beta >= 0.0:
            raise ValueError(
                f"SDARConfig.sdar_gate_beta={self.sdar_gate_beta!r} is not valid; expected a number >= 0."
            )
        _check_choice("distill_loss_type", self.distill_loss_type, DISTILL_LOSS_TYPES)
        if not self.rl_loss_coef >= 0.0:
            raise ValueError(f"SDARConfig.rl_loss_coef={self.rl_loss_coef!r} is not valid; expected a number >= 0.")
        if self.rl_loss_coef == 0.0 and self.sdar_coef == 0.0:
            raise ValueError("SDARConfig.rl_loss_coef=0.0 with sdar_coef=0.0 leaves no loss; set one of them > 0.")
        if self.sdar_coef == 0.0 and self.distill_loss_type != "rlsd" and self.rl_loss_coef != 1.0:
            raise ValueError(
                f"SDARConfig.rl_loss_coef={self.rl_loss_coef!r} has no effect with sdar_coef=0.0 (plain GRPO, loss "
                "unscaled); leave rl_loss_coef at 1.0, or set sdar_coef > 0 to weight GRPO against distillation."
            )
        if self.sdar_coef == 0.0 and self.distill_loss_type in ("naive", "skill_sd"):
            raise ValueError(
                f"SDARConfig.distill_loss_type={self.distill_loss_type!r} has no effect with sdar_coef=0.0 (no "
                "teacher term: plain GRPO); set sdar_coef > 0 (the paper's baselines use 0.01; Skill-SD 0.001)."
            )
        if self.distill_loss_type == "rlsd" and self.rl_loss_coef == 0.0:
            raise ValueError(
                "SDARConfig.rl_loss_coef=0.0 with distill_loss_type='rlsd' trains on a zero loss: RLSD adds no loss "
                "term, it reshapes the GRPO advantages; set rl_loss_coef > 0 (1.0 is RLSD)."
            )
        _check_choice("teacher_model_kind", self.teacher_model_kind, TEACHER_MODEL_KINDS)
        _check_choice("teacher_context_placement", self.teacher_context_placement, CONTEXT_PLACEMENTS)
        if not 0.0 < self.teacher_update_rate <= 1.0:
            raise ValueError(
                f"SDARConfig.teacher_update_rate={self.teacher_update_rate!r} is not valid; expected 0 < rate <= 1."
            )
        for name in ("teacher_share_prefix", "student_share_prefix", "generation_share_prefix"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"SDARConfig.{name}={getattr(self, name)!r} is not valid; expected True or False.")
        checkpointing = getattr(self, "activation_checkpointing", None) or self.gradient_checkpointing
        if self.student_share_prefix and checkpointing:
            raise ValueError(
                "SDARConfig.student_share_prefix=True needs gradient_checkpointing=False: checkpointed layers keep no "
                "keys/values to share; turn one of them off."
            )
        if not self.teacher_context_column:
            raise ValueError("SDARConfig.teacher_context_column='' is not valid; expected a column name.")
        if self.teacher_max_prompt_length is not None and self.teacher_max_prompt_length < 2:
            raise ValueError(
                f"SDARConfig.teacher_max_prompt_length={self.teacher_max_prompt_length!r} is not valid; "
                "expected None (no limit) or an integer >= 2."
            )
        if self.max_tokens_per_backward is not None and self.max_tokens_per_backward < 1:
            raise ValueError(
                f"SDARConfig.max_tokens_per_backward={self.max_tokens_per_backward!r} is not valid; "
                "expected None (no bound) or an integer >= 1."
            )
