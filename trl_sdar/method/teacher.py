"""The teacher: privileged-context token assembly (pure) and the weights that score it (METHOD.md §3).

The teacher prompt is built at the token level: context ids + the student's exact prompt ids; the completion ids
are reused as they are. Nothing the model produced is decoded and re-encoded, and the context is never cut: when the
teacher prompt is over the limit, the oldest student-prompt tokens go first, and a row whose context alone does not
fit is dropped from distillation (and counted).
"""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from trl_sdar.method import teacher_sharding as sharding
from trl_sdar.method.config import SDARConfig

EMA_ADAPTER = "teacher"
TEACHER_EMA_FILE = "teacher_ema.safetensors"  # in each checkpoint: the EMA teacher's weights, restored on resume
# First PEFT release whose `PeftModel.set_adapter` takes `inference_mode` (0.19.0; 0.18.1 has `set_adapter(name)`
# only). pyproject.toml's floor must be at least this; tests/method/test_teacher.py checks both and each PEFT call.
PEFT_MIN_VERSION = "0.19.0"


@dataclass(frozen=True)
class TeacherPrompts:
    """Left-padded teacher prompts for a batch and what happened to each row."""

    ids: torch.Tensor  # (B, P') teacher prompt ids, left-padded
    mask: torch.Tensor  # (B, P') 1 on real tokens
    has_teacher: torch.Tensor  # (B,) bool: the row takes part in distillation
    truncated: torch.Tensor  # (B,) bool: student-prompt tokens were dropped to fit the context
    context_tokens: torch.Tensor  # (B,) long: context length in tokens (0 without context)


def _insert_context(prompt: list[int], context: list[int], bos_token_id: int | None) -> list[int]:
    # A model whose prompts start with BOS keeps BOS first; the context goes right after it.
    if bos_token_id is not None and prompt and prompt[0] == bos_token_id:
        return prompt[:1] + context + prompt[1:]
    return context + prompt


def build_teacher_prompts(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    contexts: Sequence[list[int] | None],
    *,
    pad_token_id: int,
    max_length: int | None = None,
    bos_token_id: int | None = None,
) -> TeacherPrompts:
    """Assemble `context + student prompt` per row from left-padded student prompts (B, P).

    Rows with `None`/empty context keep the student prompt and get `has_teacher=False`.
    """
    rows, has_teacher, truncated, n_context = [], [], [], []
    for ids, m, context in zip(prompt_ids.tolist(), prompt_mask.tolist(), contexts, strict=True):
        prompt = [t for t, keep in zip(ids, m) if keep]
        context = list(context or [])
        if bos_token_id is not None and context[:1] == [bos_token_id] and prompt[:1] == [bos_token_id]:
            context = context[1:]  # rendered by a chat template that opens with BOS (Llama-3): one BOS, not two
        ok, cut = bool(context), False
        if ok and max_length is not None and len(context) + len(prompt) > max_length:
            room = max_length - len(context)
            if room < 1:
                ok = False  # the context alone fills the limit: no distillation for this row, never a cut context
            else:
                keep_bos = bos_token_id is not None and prompt[0] == bos_token_id and room > 1
                prompt = prompt[:1] + prompt[len(prompt) - room + 1 :] if keep_bos else prompt[len(prompt) - room :]
                cut = True
        rows.append(_insert_context(prompt, context, bos_token_id) if ok else prompt)
        has_teacher.append(ok)
        truncated.append(cut)
        n_context.append(len(context))
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=prompt_ids.dtype)
    mask = torch.zeros((len(rows), width), dtype=prompt_mask.dtype)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=prompt_ids.dtype)
            mask[i, width - len(row) :] = 1
    device = prompt_ids.device
    return TeacherPrompts(
        ids=ids.to(device),
        mask=mask.to(device),
        has_teacher=torch.tensor(has_teacher, dtype=torch.bool, device=device),
        truncated=torch.tensor(truncated, dtype=torch.bool, device=device),
        context_tokens=torch.tensor(n_context, dtype=torch.long, device=device),
    )


def prompt_bos_token_id(tokenizer) -> int | None:
    """The BOS id if prompts start with it (the tokenizer prepends it, or the chat template opens with it once per
    conversation, as Llama-3's does), else None.

    SmolLM2 declares `<|im_start|>` as its "bos": its template opens every message with it, so it is a role marker,
    not a BOS, and must not pin the context's place.
    """
    bos = tokenizer.bos_token_id
    if bos is None:
        return None
    if tokenizer("a")["input_ids"][:1] == [bos]:
        return bos
    chat = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    try:
        ids = _as_ids(tokenizer.apply_chat_template(chat, tokenize=True))
    except Exception:  # no chat template, or one that rejects this conversation: prompts are plain text
        return None
    return bos if ids[:1] == [bos] and ids.count(bos) == 1 else None


def _as_ids(ids) -> list[int]:
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


class ContextTokenizer:
    """Turns a row's privileged context (text or chat messages) into token ids, once per distinct context."""

    def __init__(self, tokenizer, *, placement: str, header: str):
        self.tokenizer = tokenizer
        self.placement = placement
        self.header = header
        self._cache: dict[str, list[int]] = {}

    def __call__(self, context: object) -> list[int] | None:
        if context is None or (isinstance(context, str | list) and len(context) == 0):
            return None
        key = repr(context)
        if key not in self._cache:
            self._cache[key] = self._encode(context)
        return self._cache[key]

    def _encode(self, context: object) -> list[int]:
        if isinstance(context, str):
            if self.placement == "system":
                return self._chat_ids([{"role": "system", "content": self.header + context}])
            return self.tokenizer(self.header + context + "\n\n", add_special_tokens=False)["input_ids"]
        if isinstance(context, list) and all(isinstance(m, dict) and "role" in m for m in context):
            return self._chat_ids(context)
        raise ValueError(
            f"Privileged context must be a string or a list of chat messages (dicts with 'role'/'content'); "
            f"got {type(context).__name__}: {str(context)[:80]!r}."
        )

    def _chat_ids(self, messages: list[dict]) -> list[int]:
        return _as_ids(self.tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=False))


def _is_peft(model: nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def check_peft_version(model: nn.Module) -> None:
    """Fail with the fix when the installed PEFT predates the `set_adapter(..., inference_mode=)` the teacher uses."""
    if "inference_mode" not in inspect.signature(type(model).set_adapter).parameters:
        import peft

        raise ImportError(
            f"trl_sdar's teacher needs peft>={PEFT_MIN_VERSION} (set_adapter(..., inference_mode=True)); "
            f"peft {peft.__version__} is installed: pip install 'peft>={PEFT_MIN_VERSION}'."
        )


@contextmanager
def _restored_state(model: nn.Module) -> Iterator[None]:
    """Restore `requires_grad` of every parameter, train/eval mode and (PEFT) the active adapter on exit."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    adapter = model.active_adapter if _is_peft(model) else None
    try:
        yield
    finally:
        if adapter is not None and model.active_adapter != adapter:
            model.set_adapter(adapter)
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, training in modes:
            m.training = training


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Every submodule in eval mode (dropout off); each one's own train/eval flag restored on exit."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


class Teacher:
    """Chooses the weights that score the teacher prompt, for each `teacher_model_kind`.

    With PEFT one base model serves student, teacher and reference: `live` = the trained adapter, `base` = adapters
    disabled (or TRL's "ref" adapter when re-training an existing adapter), `ema` = a frozen adapter named
    `"teacher"` updated by EMA. Without PEFT, `base` and `ema` keep a frozen copy of the model (one more model in
    memory), prepared for ZeRO/FSDP2 like TRL's reference model (`teacher_sharding`); `base` reuses TRL's
    reference model when there is one (`beta > 0`, no `sync_ref_model`). Every pass restores the active
    adapter, `requires_grad` flags and train/eval mode. The EMA weights are saved with each checkpoint and restored
    on resume (`save` / `load`).
    """

    def __init__(self, model: nn.Module, args: SDARConfig, accelerator=None, ref_model: nn.Module | None = None):
        self.model = model  # unwrapped policy (PeftModel or PreTrainedModel)
        self.kind = args.teacher_model_kind
        self.rate = args.teacher_update_rate
        self.peft = _is_peft(model)
        self.copy: nn.Module | None = None
        self._copy_placed = False
        if self.peft:
            check_peft_version(model)
        if self.kind == "ema" and self.peft:
            if sharding.sharding_of(accelerator) == "fsdp1":
                raise ValueError(
                    "teacher_model_kind='ema' needs FSDP2 (fsdp_version: 2): FSDP1 flattens the student and teacher "
                    "adapters into shards that cannot be averaged pairwise."
                )
            self._add_ema_adapter()
        elif self.kind == "base" and not self.peft and ref_model is not None and not args.sync_ref_model:
            self.copy, self._copy_placed = ref_model, True  # TRL's prepared reference model is the initial policy
        elif self.kind in ("base", "ema") and not self.peft:
            self.copy, self._copy_placed = sharding.frozen_copy(model, args, accelerator)

    def _add_ema_adapter(self) -> None:
        active = self.model.active_adapter
        if EMA_ADAPTER in self.model.peft_config:
            raise ValueError(f"teacher_model_kind='ema' needs the adapter name {EMA_ADAPTER!r}, already in use.")
        with _restored_state(self.model):
            self.model.add_adapter(EMA_ADAPTER, copy.deepcopy(self.model.peft_config[active]))
        sharding.copy_pairs_(self._adapter_pairs())
        for p in self.teacher_params():
            p.requires_grad_(False)

    def _adapter_pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(student, teacher) adapter parameter pairs, matched on the adapter-name component of the parameter name:
        `…lora_A.default.weight` ↔ `…lora_A.teacher.weight`, `…lora_embedding_A.default` ↔ `…lora_embedding_A.teacher`.
        """
        active = self.model.active_adapter
        sharding.reshard(self.model)
        params = dict(self.model.named_parameters())
        pairs = []
        for name, param in params.items():
            parts = name.split(".")
            if active in parts:
                parts[parts.index(active)] = EMA_ADAPTER
                pairs.append((param, params[".".join(parts)]))
        return pairs

    def _copy_pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(student, teacher) pairs of the policy and its frozen copy, matched by parameter name."""
        sharding.reshard(self.model)
        sharding.reshard(self.copy)
        teacher = dict(sharding.unwrapped(self.copy).named_parameters())
        student = dict(self.model.named_parameters())
        if teacher.keys() != student.keys():
            extra = sorted(teacher.keys() ^ student.keys())[:3]
            raise ValueError(f"The teacher copy and the policy have different parameters, e.g. {extra}.")
        return [(student[name], teacher[name]) for name in student]

    def _ema_named(self) -> list[tuple[str, torch.Tensor]]:
        """The EMA teacher's own parameters by name (what a checkpoint stores), FSDP2 shards re-registered."""
        sharding.reshard(self.model)
        sharding.reshard(self.copy)
        if self.copy is not None:
            return list(sharding.unwrapped(self.copy).named_parameters())
        return [(n, p) for n, p in self.model.named_parameters() if EMA_ADAPTER in n.split(".")]

    def teacher_params(self) -> list[torch.Tensor]:
        """Parameters that belong to the teacher only (never trained by the optimizer)."""
        if self.copy is not None:
            return list(self.copy.parameters())
        if self.kind == "ema" and self.peft:
            return [p for _, p in self._ema_named()]
        return []

    @contextmanager
    def scoring(self, policy: nn.Module) -> Iterator[nn.Module]:
        """Yield the module to run for teacher log-probs (call it under `torch.no_grad()`).

        `base` and `ema` score in eval mode (no dropout, whatever adapter was added after TRL's `disable_dropout`);
        `live` scores the policy in the mode it trains in, as TRL computes its old and reference log-probs."""
        if self.copy is not None:
            if not self._copy_placed:  # single process / DDP: follow the policy wherever the trainer put it
                self.copy.to(next(policy.parameters()).device)
            with _eval_mode(self.copy):
                yield self.copy
            return
        with _restored_state(self.model):
            if self.kind == "live":
                yield policy
                return
            with _eval_mode(policy):
                if self.kind == "base" and "ref" not in self.model.peft_config:
                    with self.model.disable_adapter():
                        yield policy
                else:
                    self.model.set_adapter("ref" if self.kind == "base" else EMA_ADAPTER, inference_mode=True)
                    yield policy

    @torch.no_grad()
    def ema_update(self) -> None:
        """θ_T ← (1 − r) θ_T + r θ after an optimizer step (no-op for `live` and `base`); gathers ZeRO-3 partitions."""
        if self.kind != "ema":
            return
        sharding.lerp_pairs_(self._copy_pairs() if self.copy is not None else self._adapter_pairs(), self.rate)

    def save(self, checkpoint_dir: str, *, is_main_process: bool) -> None:
        """Write the EMA teacher's full weights to `<checkpoint_dir>/teacher_ema.safetensors` (collective)."""
        if self.kind != "ema":
            return  # `live` is the policy, `base` its initial weights: nothing of their own to save
        state = sharding.full_state(self._ema_named(), keep=is_main_process)
        if is_main_process:
            from safetensors.torch import save_file

            save_file(state, os.path.join(checkpoint_dir, TEACHER_EMA_FILE))

    def restart_from_policy(self) -> None:
        """EMA teacher ← the current policy (resuming from a checkpoint that holds no EMA weights)."""
        if self.kind == "ema":
            sharding.copy_pairs_(self._copy_pairs() if self.copy is not None else self._adapter_pairs())

    def load(self, checkpoint_dir: str) -> bool:
        """Restore the EMA weights saved by `save`; False (and nothing changed) when the checkpoint has none."""
        path = os.path.join(checkpoint_dir, TEACHER_EMA_FILE)
        if self.kind != "ema" or not os.path.isfile(path):
            return False
        from safetensors.torch import load_file

        sharding.load_state_(self._ema_named(), load_file(path))
        return True
