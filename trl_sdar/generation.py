"""Token-in, token-out generators for multi-turn rollouts: the model's own `generate` (CPU/GPU) or TRL's vLLM.

A generator takes a batch of token-id contexts and returns, per context, the new token ids (ending with EOS when the
model stopped) and their sampling log-probs (vLLM) or None. Model text is never re-tokenised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class Generated:
    ids: list[int]
    logprobs: list[float] | None = None


class Generator(Protocol):
    def generate(self, contexts: list[list[int]], max_new_tokens: int) -> list[Generated]: ...


class HFGenerator:
    """Sampling with `model.generate` on left-padded contexts (the trainer's sampling settings)."""

    def __init__(self, model, tokenizer, *, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0):
        self.model = model
        self.pad_token_id = tokenizer.pad_token_id
        eos = model.generation_config.eos_token_id if model.generation_config.eos_token_id is not None else []
        self.eos_token_ids = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
        self.sampling = {"do_sample": temperature > 0, "top_p": top_p, "top_k": top_k or None}
        if temperature > 0:
            self.sampling["temperature"] = temperature

    @torch.no_grad()
    def generate(self, contexts: list[list[int]], max_new_tokens: int) -> list[Generated]:
        if not contexts:
            return []
        width = max(len(c) for c in contexts)
        device = next(self.model.parameters()).device
        ids = torch.full((len(contexts), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(contexts), width), dtype=torch.long)
        for i, context in enumerate(contexts):
            ids[i, width - len(context) :] = torch.tensor(context)
            mask[i, width - len(context) :] = 1
        out = self.model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            pad_token_id=self.pad_token_id,
            eos_token_id=sorted(self.eos_token_ids),
            **self.sampling,
        )
        return [Generated(self._until_eos(row)) for row in out[:, width:].tolist()]

    def _until_eos(self, row: list[int]) -> list[int]:
        for i, token in enumerate(row):
            if token in self.eos_token_ids:
                return row[: i + 1]
        return row


class VLLMGenerator:
    """TRL's vLLM generation (colocate or server) with a per-call token budget; returns sampling log-probs.

    In server mode every process must call `generate` the same number of times (TRL gathers prompts across
    processes), so the rollout keeps calling it with an empty batch while other processes still have episodes.
    """

    def __init__(self, trainer):
        self.trainer = trainer

    def generate(self, contexts: list[list[int]], max_new_tokens: int) -> list[Generated]:
        vllm = self.trainer.vllm_generation
        saved = vllm.max_completion_length
        vllm.max_completion_length = max_new_tokens
        try:
            _, completion_ids, logprobs, _ = vllm.generate(prompts=contexts, images=None, num_generations=1)
        finally:
            vllm.max_completion_length = saved
        # vLLM returns per-token top-k lists whose first entry is the sampled token's log-prob
        return [Generated(list(ids), [lp[0] for lp in lps]) for ids, lps in zip(completion_ids, logprobs, strict=True)]
