"""Token-in, token-out generators for multi-turn rollouts: the model's own `generate` (CPU/GPU) or TRL's vLLM.

A generator takes a batch of token-id contexts and returns, per context, the new token ids (ending with EOS when the
model stopped) and their sampling log-probs (vLLM) or None. Model text is never re-tokenised. `make_generator(trainer)`
builds the one a rollout uses, sampling with the trainer's settings; use it as a context manager around one rollout
(exiting frees the KV caches, or puts vLLM back to sleep).

Multi-turn generation in linear time: `HFGenerator` keeps the KV cache of the rows it generated for. A context that
starts with one of them (its context, the ids returned, then the environment's tokens) reuses that row's keys/values
and only its new suffix is prefilled; anything else is prefilled in full. On a rollout's first call, contexts that
start alike (the episodes of one task share their first prompt) get that common prefix prefilled once.
`VLLMGenerator` keeps sleeping vLLM awake for the whole rollout, so the weights are synced once per rollout (TRL's
`generate` would re-sync them every turn) and vLLM's prefix cache survives from one turn to the next.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch

from trl_sdar.method.teacher_sharding import COLLECTIVE_FORWARD, sharding_of


@dataclass(frozen=True)
class Generated:
    ids: list[int]
    logprobs: list[float] | None = None


class Generator(Protocol):
    def generate(self, contexts: list[list[int]], max_new_tokens: int) -> list[Generated]: ...


def make_generator(trainer) -> HFGenerator | VLLMGenerator:
    """The generator of a rollout for `trainer`: TRL's vLLM with `use_vllm`, else the model's `generate`, sampling
    with the trainer's `temperature`, `top_p`, `top_k`, `min_p`, `repetition_penalty`, `generation_kwargs` and
    `cache_implementation` (the checkpoint's `generation_config` is ignored, as in TRL's own generation)."""
    args = trainer.args
    if args.use_vllm:
        return VLLMGenerator(trainer)
    tokenizer = trainer.processing_class
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    model = trainer.accelerator.unwrap_model(trainer.model)
    context = None
    if getattr(trainer, "model_wrapped", None) is not None:
        from trl.models import unwrap_model_for_generation

        # as TRL generates: ZeRO-3 parameters gathered (ds3_gather_for_generation), gradient checkpointing off,
        # for the whole rollout (every turn) rather than once per turn
        context = unwrap_model_for_generation(
            trainer.model_wrapped,
            trainer.accelerator,
            gather_deepspeed3_params=args.ds3_gather_for_generation,
            gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs,
        )
    return HFGenerator(
        model,
        tokenizer,
        model_context=context,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        generation_kwargs=args.generation_kwargs,
        cache_implementation=args.cache_implementation,
        collective=sharding_of(trainer.accelerator) in COLLECTIVE_FORWARD,
        share_prefixes=getattr(args, "generation_share_prefix", True),  # a plain GRPOConfig has no such field
    )


@dataclass(frozen=True)
class _CachedRow:
    start: int  # first column of the row's tokens in the stored cache (columns before it are left padding)
    tokens: torch.Tensor  # (n,) the ids whose keys/values the stored cache holds, from that column on


class HFGenerator:
    """Sampling with `model.generate` on left-padded contexts, with exactly the sampling settings given.

    `temperature=0` samples greedily. Keys/values are reused across calls (`reuse_cache`) for contexts that extend a
    row of the previous call; the cache of rows no context continues is freed at the next call or by `close()`.
    With nothing stored, a prefix that several contexts share is prefilled once (`share_prefixes`; not when every
    forward is a collective, as the extra forward is data-dependent).
    The stored keys/values belong to the weights they were computed with: `close()` after a weight update (the
    rollout makes a new generator per call).
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        min_p: float | None = None,
        repetition_penalty: float = 1.0,
        generation_kwargs: dict | None = None,
        cache_implementation: str | None = None,
        reuse_cache: bool = True,
        model_context=None,
        collective: bool = False,
        share_prefixes: bool = True,
    ):
        self.model = model
        # ZeRO-3 / FSDP: every forward is a collective, so every process generates in step (`synced_gpus`) and one
        # with nothing to generate still takes part in the others' generate call
        self.collective = collective
        self._model_context = model_context  # entered by `with`: yields the model to generate with
        self.pad_token_id = tokenizer.pad_token_id
        eos = model.generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        self.eos_token_ids = [tokenizer.eos_token_id, *(e for e in eos if e != tokenizer.eos_token_id)]
        self.config = _generation_config(
            self.pad_token_id,
            tokenizer.bos_token_id,
            self.eos_token_ids,
            {"temperature": temperature, "top_p": top_p, "top_k": top_k, "min_p": min_p},
            repetition_penalty,
            generation_kwargs,
            cache_implementation,
        )
        # Reusing keys/values needs one row per context and the default dynamic cache (a static or quantised cache,
        # beams or several sequences per context change what the cache holds)
        self.reuse_cache = (
            reuse_cache
            and cache_implementation in (None, "dynamic")
            and self.config.cache_implementation in (None, "dynamic")
            and (self.config.num_beams or 1) == 1
            and (self.config.num_return_sequences or 1) == 1
        )
        self.share_prefixes = share_prefixes and self.reuse_cache and not collective  # see _prefill_shared_prefixes
        self._cache = None
        self._rows: list[_CachedRow] = []
        self.last_prefill_tokens = 0  # tokens the last call prefilled (rows × columns after the reused cache)

    @torch.no_grad()
    def generate(self, contexts: list[list[int]], max_new_tokens: int) -> list[Generated]:
        if not contexts:
            self.close()
            if self.collective:  # the other processes' forwards are collectives: join them, keep nothing
                self._generate([[self.pad_token_id]], max_new_tokens)
            return []
        return self._generate(contexts, max_new_tokens)

    def _generate(self, contexts: list[list[int]], max_new_tokens: int) -> list[Generated]:
        device = next(self.model.parameters()).device
        ids, mask = _left_padded(contexts, self.pad_token_id)  # (B, W) each
        width = ids.size(1)
        shared = 0  # tokens of the prefixes prefilled once for several rows
        if self.share_prefixes and self._cache is None:
            shared = self._prefill_shared_prefixes(contexts, device)
        cache = self._reused_cache(contexts, device) if self.reuse_cache else None
        self.close()  # the previous call's cache: what is continued has been copied into `cache`
        reused = cache.get_seq_length() if cache is not None else 0
        self.last_prefill_tokens = shared + len(contexts) * (width - reused)
        config = copy.deepcopy(self.config)
        config.max_new_tokens = max_new_tokens
        config.return_dict_in_generate = True
        with _only_these_settings(self.model):
            out = self.model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                cache=cache,
                generation_config=config,
                synced_gpus=True if self.collective else None,  # None: transformers decides, as before
            )
        results = [Generated(self._until_eos(row)) for row in out.sequences[:, width:].tolist()]
        if self.reuse_cache:
            self._remember(contexts, results, out.cache, width)
        return results

    def close(self) -> None:
        """Free the stored keys/values (the next call prefills every context in full)."""
        self._cache, self._rows = None, []

    def __enter__(self) -> HFGenerator:
        if self._model_context is not None:
            self.model = self._model_context.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        if self._model_context is not None:
            self._model_context.__exit__(*exc)

    def _until_eos(self, row: list[int]) -> list[int]:
        for i, token in enumerate(row):
            if token in self.eos_token_ids:
                return row[: i + 1]
        return row

    def _remember(self, contexts: list[list[int]], results: list[Generated], cache, width: int) -> None:
        from transformers.cache_utils import DynamicLayer

        layers = getattr(cache, "layers", None)
        if not layers or any(type(layer) is not DynamicLayer or not layer.is_initialized for layer in layers):
            return  # no cache, sliding-window or shared layers: the next call prefills in full
        generated = cache.get_seq_length() - width  # the last sampled token of the longest row was never fed
        self._cache = cache
        self._rows = [
            _CachedRow(width - len(c), torch.tensor(c + r.ids[:generated], dtype=torch.long))
            for c, r in zip(contexts, results, strict=True)
        ]

    def _prefill_shared_prefixes(self, contexts: list[list[int]], device) -> int:
        """Nothing stored yet (a rollout's first call): contexts that start alike (the episodes of one task) get their
        common prefix prefilled once, batched over the distinct prefixes, and stored as if generated for (`_remember`,
        which also refuses caches it cannot copy), so that `_reused_cache` copies it under each of them. Returns the
        prefix tokens prefilled (0: no prefix worth sharing)."""
        from transformers import DynamicCache

        from trl_sdar.method.prefix_scoring import cache_kwarg, group_rows_by_prefix

        groups = [g for g in group_rows_by_prefix(contexts) if g.prefix_len and len(g.rows) > 1]
        if not groups:
            return 0
        prefixes = [contexts[g.rows[0]][: g.prefix_len] for g in groups]
        ids, mask = _left_padded(prefixes, self.pad_token_id)  # (G, P) each
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as `generate` derives them from the attention mask
        cache = DynamicCache(config=self.model.config)  # the layer kinds `generate` would use
        self.model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                   use_cache=True, logits_to_keep=1, **{cache_kwarg(self.model): cache})  # fmt: skip
        self._remember(prefixes, [Generated([]) for _ in prefixes], cache, ids.size(1))
        return sum(len(p) for p in prefixes)

    def _reused_cache(self, contexts: list[list[int]], device):
        """A DynamicCache for the first columns of the left-padded batch, copied from the stored rows; None if no
        context extends a stored row.

        Row i (length L_i) reuses p_i tokens of its best stored row (longest common prefix, at least its last token
        is fed again). Every row prefills the last S = max_i (L_i - p_i) columns, so the cache holds C = W - S
        columns: row i's first L_i - S tokens, right-aligned, left padding as zeros (masked out by the attention
        mask, like the padding of the ids). Positions come from the attention mask as without a cache.
        """
        from transformers import DynamicCache

        if self._cache is None:
            return None
        sources = [self._best_row(torch.tensor(c, dtype=torch.long)) for c in contexts]
        suffix = max(len(c) - p for c, (_, p) in zip(contexts, sources, strict=True))
        taken = [max(0, len(c) - suffix) for c in contexts]  # row i's first tokens read from the cache
        columns = max(taken)
        if columns == 0:
            return None
        old, cache = self._cache, DynamicCache()
        for layer_idx, layer in enumerate(old.layers):
            old_keys, old_values = layer.keys, layer.values  # (B_old, H_kv, T_old, D)
            shape = (len(contexts), old_keys.shape[1], columns, old_keys.shape[3])
            keys, values = old_keys.new_zeros(shape), old_values.new_zeros(shape)  # (B, H_kv, C, D)
            for i, ((row, _), n) in enumerate(zip(sources, taken, strict=True)):
                if n:
                    start = self._rows[row].start
                    keys[i, :, columns - n :] = old_keys[row, :, start : start + n]
                    values[i, :, columns - n :] = old_values[row, :, start : start + n]
            cache.update(keys.to(device), values.to(device), layer_idx)
        return cache

    def _best_row(self, context: torch.Tensor) -> tuple[int, int]:
        """(stored row, tokens reusable) for `context`: the longest common prefix, leaving its last token to feed."""
        best = (0, 0)
        for index, row in enumerate(self._rows):
            n = min(len(context) - 1, len(row.tokens))
            differ = (context[:n] != row.tokens[:n]).nonzero()
            common = int(differ[0]) if len(differ) else n
            if common > best[1]:
                best = (index, common)
        return best


def _left_padded(contexts: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, W) of `contexts` left-padded to the longest, and their attention mask (B, W)."""
    width = max(len(c) for c in contexts)
    ids = torch.full((len(contexts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(contexts), width), dtype=torch.long)
    for i, context in enumerate(contexts):
        ids[i, width - len(context) :] = torch.tensor(context)
        mask[i, width - len(context) :] = 1
    return ids, mask


def _generation_config(pad_id, bos_id, eos_ids, sampling: dict, repetition_penalty, generation_kwargs, cache_impl):
    """TRL's GenerationConfig for `generate` (GRPOTrainer, transformers path), greedy when `temperature == 0`."""
    from transformers import GenerationConfig

    if generation_kwargs is not None and not isinstance(generation_kwargs, dict):
        raise ValueError(f"generation_kwargs must be a dict or None, got {type(generation_kwargs).__name__}.")
    kwargs = {
        "do_sample": True,
        "pad_token_id": pad_id,
        "bos_token_id": bos_id,
        "eos_token_id": eos_ids,
        **sampling,
        "repetition_penalty": repetition_penalty,
        "cache_implementation": cache_impl,
    }
    if sampling["temperature"] == 0:  # greedy: no sampling warpers
        kwargs = {k: v for k, v in kwargs.items() if k not in ("temperature", "top_p", "top_k", "min_p")}
        kwargs["do_sample"] = False
    kwargs.update(generation_kwargs or {})
    return GenerationConfig(**kwargs, disable_compile=True)


@contextmanager
def _only_these_settings(model):
    """Hide the checkpoint's `generation_config` from `generate`, which fills every unset field from it (e.g.
    Qwen2.5-Instruct's `repetition_penalty=1.05`): only the passed config and the library defaults apply."""
    from transformers import GenerationConfig

    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    saved = target.generation_config
    target.generation_config = GenerationConfig()
    try:
        yield
    finally:
        target.generation_config = saved


class VLLMGenerator:
    """TRL's vLLM generation (colocate or server) with a per-call token budget; returns sampling log-probs.

    In server mode every process must call `generate` the same number of times (TRL gathers prompts across
    processes), so the rollout keeps calling it with an empty batch while other processes still have episodes.

    With colocated vLLM in sleep mode, TRL's `generate` puts vLLM to sleep (level 2: weights discarded) after every
    call and re-syncs the weights before the next: every turn. Here vLLM is woken (and synced, if asleep) on the
    first call and kept awake until `close()`, which puts it to sleep once: one weight sync per rollout.
    """

    def __init__(self, trainer):
        self.trainer = trainer
        self._awake = False

    def generate(self, contexts: list[list[int]], max_new_tokens: int) -> list[Generated]:
        vllm = self.trainer.vllm_generation
        real = len(contexts)
        contexts = self._padded_for_server(contexts)
        saved = vllm.max_completion_length
        vllm.max_completion_length = max_new_tokens
        try:
            with self._kept_awake(vllm):
                _, completion_ids, logprobs, _ = vllm.generate(prompts=contexts, images=None, num_generations=1)
        finally:
            vllm.max_completion_length = saved
        # vLLM returns per-token top-k lists whose first entry is the sampled token's log-prob
        pairs = list(zip(completion_ids, logprobs, strict=True))[:real]  # filler replies dropped
        return [Generated(list(ids), [lp[0] for lp in lps]) for ids, lps in pairs]

    def _padded_for_server(self, contexts: list[list[int]]) -> list[list[int]]:
        """Server mode: TRL gathers every process's prompts and hands process r the replies `r·n … (r+1)·n`, n being
        its *own* prompt count, so all processes must send as many. Processes whose episodes ended earlier send
        one-token filler contexts up to the largest count (their replies are dropped)."""
        trainer = self.trainer
        if trainer.args.vllm_mode != "server" or trainer.accelerator.num_processes < 2:
            return contexts
        accelerator = trainer.accelerator
        most = int(accelerator.gather(torch.tensor([len(contexts)], device=accelerator.device)).max())
        tokenizer = getattr(trainer.processing_class, "tokenizer", trainer.processing_class)
        return [*contexts, *[[tokenizer.eos_token_id]] * (most - len(contexts))]

    @contextmanager
    def _kept_awake(self, vllm):
        if not (getattr(vllm, "mode", None) == "colocate" and getattr(vllm, "enable_sleep_mode", False)):
            yield
            return
        if not self._awake:
            if vllm._llm_weights_sleeping:  # the trainer did not sync this step (or synced before a sleep)
                vllm.sync_weights()
            vllm.llm.wake_up(tags=["kv_cache"])
            self._awake = True
        vllm.enable_sleep_mode = False  # TRL's generate neither re-syncs before nor sleeps after this call
        try:
            yield
        finally:
            vllm.enable_sleep_mode = True

    def close(self) -> None:
        """Put colocated vLLM back to sleep (level 2, as TRL does) if this generator woke it."""
        if self._awake:
            vllm = self.trainer.vllm_generation
            vllm.llm.sleep(level=2)
            vllm._llm_weights_sleeping = True
            self._awake = False

    def __enter__(self) -> VLLMGenerator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
