"""Teacher log-probs at the price of the unique tokens: rows that start alike share one encoding of their prefix.

Every row of a GRPO group carries the same privileged context and, in `episode` mode, the same prompt, so the teacher
prompts of a batch are mostly the same leading tokens. `group_rows_by_prefix` (pure) splits the rows into groups
with a common prefix, chosen to encode the fewest tokens; `nest_groups` then finds groups whose prefixes start alike
(one context under several prompts), so that common part is encoded once too. `shared_prefix_logps` encodes each
prefix once (batch 1, keys/values kept), then scores every row's remaining prompt tokens and completion against those
keys and values, micro-batched, through the model's own fused LM head (TRL's `add_fused_lm_head`: same temperature,
same log-softmax, no `(B, T, V)` logits, no logits at all for prefix tokens). The prefix is broadcast to the rows of
each forward layer by layer and never copied per row into a cache. Rows that share nothing are scored on their own.

Positions follow the unshared pass, where row `r`'s first real token sits at its left-padding width `pad_r`: a group
takes the positions of its first row, so rows of equal length (the generations of one prompt) see the very same
positions, and the others a constant shift, which rotary embeddings make immaterial up to rounding.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

MIN_SHARED_TOKENS = 16  # a shorter common prefix is not worth its own forward call


@dataclass(frozen=True)
class PrefixGroup:
    """Rows (batch indices) whose teacher prompts start with the same `prefix_len` tokens (0: scored unshared)."""

    rows: tuple[int, ...]
    prefix_len: int


def _common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def group_rows_by_prefix(rows: Sequence[Sequence[int]], min_shared: int = MIN_SHARED_TOKENS) -> list[PrefixGroup]:
    """Partition the rows' prompts (real tokens, no padding) into prefix groups that encode the fewest tokens.

    A group of `n` rows with common prefix `p` encodes `sum(len) - (n - 1) * p` tokens. Every row keeps at least
    its last prompt token out of the prefix (its output predicts the first completion token). The rows are sorted,
    so any group's common prefix is the smallest common prefix of its neighbours, and the best split of the sorted
    order into consecutive groups is found exactly by dynamic programming. Groups sharing fewer than `min_shared`
    tokens are merged into one unshared group (`prefix_len=0`), returned last.
    """
    if any(len(r) == 0 for r in rows):
        raise ValueError("group_rows_by_prefix needs every row to have at least one prompt token.")
    order = sorted(range(len(rows)), key=lambda i: list(rows[i]))
    lengths = [len(rows[i]) for i in order]
    lcp = [_common_prefix_len(rows[order[k]], rows[order[k + 1]]) for k in range(len(order) - 1)]
    best = [0] * (len(order) + 1)  # best[j]: fewest tokens to encode order[:j]
    choice = [(0, 0)] * (len(order) + 1)  # (segment start, shared length) of the last segment of best[j]
    for end in range(1, len(order) + 1):
        best[end], choice[end] = best[end - 1] + lengths[end - 1], (end - 1, 0)
        shared, min_len, total = 1 << 62, lengths[end - 1], lengths[end - 1]
        for start in range(end - 2, -1, -1):  # segment order[start:end], at least two rows
            shared, min_len, total = min(shared, lcp[start]), min(min_len, lengths[start]), total + lengths[start]
            prefix = min(shared, min_len - 1)
            if prefix < min_shared:
                break  # a longer segment only shares less
            cost = best[start] + total - (end - start - 1) * prefix
            if cost < best[end]:
                best[end], choice[end] = cost, (start, prefix)
    groups, unshared, end = [], [], len(order)
    while end > 0:
        start, prefix = choice[end]
        if prefix > 0:
            groups.append(PrefixGroup(tuple(order[start:end]), prefix))
        else:
            unshared[:0] = order[start:end]
        end = start
    groups.reverse()
    if unshared:
        groups.append(PrefixGroup(tuple(unshared), 0))
    return groups


def prefix_sharing_unsupported_reason(model: nn.Module) -> str | None:
    """Why a model's keys/values cannot be reused across rows here, else None: position embeddings that are not
    rotary (a group's rows read the prefix at their first row's positions, which only rotary embeddings make
    immaterial: GPT-2 and OPT rows were off by up to 0.3 nats), sliding-window or linear layers."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if getattr(config, "rope_parameters", None) is None and getattr(config, "rope_theta", None) is None:
        kind = getattr(config, "model_type", type(config).__name__)
        return f"{kind} has no rotary position embeddings (shifted positions change its scores)"
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and any(t != "full_attention" for t in layer_types):
        return f"layer types {sorted(set(layer_types))} (only 'full_attention' layers share a prefix exactly)"
    if layer_types is None and getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", 1):
        return f"sliding_window={config.sliding_window}"
    return None


def nest_groups(prompts: Sequence[Sequence[int]], groups: Sequence[PrefixGroup], min_shared: int = MIN_SHARED_TOKENS):
    """Families of prefix groups whose prefixes start alike (e.g. one context under several prompts).

    Returns `[(root_len, groups)]`: the first `root_len` tokens are encoded once for the whole family and each
    group's prefix extends them (`root_len=0`: every group encodes its own prefix; unshared groups come last).
    """
    shared = [g for g in groups if g.prefix_len > 0]
    prefixes = [list(prompts[g.rows[0]][: g.prefix_len]) for g in shared]
    families = [(f.prefix_len, [shared[i] for i in f.rows]) for f in group_rows_by_prefix(prefixes, min_shared)]
    unshared = [g for g in groups if g.prefix_len == 0]
    return families + ([(0, unshared)] if unshared else [])


def cache_kwarg(model: nn.Module) -> str:
    """Name of the forward argument that takes a `Cache`: `cache` (recent transformers) or `past_key_values`."""
    from transformers import PreTrainedModel

    hf_model = next(m for m in model.modules() if isinstance(m, PreTrainedModel))
    return "cache" if "cache" in inspect.signature(type(hf_model).forward).parameters else "past_key_values"


def _prefix_cache(prefix_kv: list[tuple[torch.Tensor, torch.Tensor]]):
    """A cache that reads the prefix keys/values (1, H, P, D) under every row of a forward and stores nothing.

    Each layer returns `cat(prefix broadcast to the batch, this forward's keys)`, freed after its attention: the
    prefix is never copied per row into a persistent cache, so memory stays at one layer's worth.
    """
    from transformers.cache_utils import Cache, DynamicLayer

    class PrefixLayer(DynamicLayer):
        def __init__(self, keys: torch.Tensor, values: torch.Tensor):
            super().__init__()
            self.keys, self.values, self.device, self.is_initialized = keys, values, keys.device, True

        def update(self, key_states, value_states, *args, **kwargs):
            batch = key_states.size(0)
            keys = torch.cat([self.keys.expand(batch, -1, -1, -1), key_states], dim=-2)
            values = torch.cat([self.values.expand(batch, -1, -1, -1), value_states], dim=-2)
            return keys, values

    return Cache(layers=[PrefixLayer(k, v) for k, v in prefix_kv])


def _encode_prefix(model, ids: torch.Tensor, start: int, parent, parent_len: int, cache_kwarg: str, autocast):
    """Keys/values [(k, v)], each (1, H, parent_len + L, D), of `ids` (1, L) read after the `parent` keys/values.

    Positions `start + parent_len ...`: the prefix sits where its first row's tokens sit in the unshared pass.
    """
    from transformers import DynamicCache

    cache = DynamicCache(ddp_cache_data=parent) if parent is not None else DynamicCache()
    positions = torch.arange(ids.size(1), device=ids.device).unsqueeze(0) + start + parent_len
    with autocast():
        model(
            input_ids=ids,
            attention_mask=ids.new_ones((1, parent_len + ids.size(1))),
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,  # the prefix's own logits are never needed
            **{cache_kwarg: cache},
        )
    return [(layer.keys, layer.values) for layer in cache.layers]


@dataclass(frozen=True)
class _Rows:
    """The batch as per-row lists: real prompt tokens and their first position in the unshared pass."""

    prompts: list[list[int]]
    starts: list[int]  # left-padding width of each row: its first real token's position in the unshared pass


def _suffix_batch(rows: _Rows, members: Sequence[int], prefix_len: int, start: int | None, completion_ids, device):
    """Left-padded remaining prompt + completion ids (b, R + C), their positions and the prompt-part mask (b, R)."""
    rest = [rows.prompts[i][prefix_len:] for i in members]
    width = max(len(r) for r in rest)
    ids = torch.zeros((len(members), width), dtype=completion_ids.dtype)
    mask = torch.zeros((len(members), width), dtype=torch.long)
    for k, r in enumerate(rest):
        ids[k, width - len(r) :] = torch.tensor(r, dtype=ids.dtype)
        mask[k, width - len(r) :] = 1
    pad = torch.tensor([width - len(r) for r in rest]).unsqueeze(1)  # (b, 1)
    base = torch.tensor([rows.starts[i] if start is None else start for i in members]).unsqueeze(1)  # (b, 1)
    columns = torch.arange(width + completion_ids.size(1)).unsqueeze(0)  # (1, R + C)
    positions = (base + prefix_len + columns - pad).clamp(min=0)  # padding columns: any valid position
    ids = torch.cat([ids.to(device), completion_ids[list(members)]], dim=1)
    return ids, positions.to(device), mask.to(device)


def shared_prefix_logps(model: nn.Module, prompt_ids, prompt_mask, completion_ids, completion_mask, **kwargs):
    """Per-token log-probs (B, C) of `completion_ids` after the left-padded `prompt_ids` (B, P), prefixes shared:
    `shared_prefix_scores` without entropies."""
    return shared_prefix_scores(model, prompt_ids, prompt_mask, completion_ids, completion_mask, **kwargs)[0]


def shared_prefix_scores(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    batch_size: int,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    min_shared: int = MIN_SHARED_TOKENS,
    most_forwards: Callable[[int], int] | None = None,
    entropies: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs (B, C) of `completion_ids` after the left-padded `prompt_ids` (B, P), prefixes shared,
    and the per-token entropies (B, C) when `entropies` (else None).

    `model` must carry TRL's fused LM head (`model(..., labels=..., fused_lm_head=True)`), as every model a
    `GRPOTrainer` scores with does. Under `torch.no_grad()` it scores (the teacher); with gradient enabled the
    gradient of a row's scores reaches the weights through its own tokens and through the shared prefix's keys and
    values, as in the unshared pass (the student, `student_share_prefix`). Masked completion positions get 0, like
    the unshared pass. Prefixes are encoded one at a time (batch 1) and at most `batch_size` rows (of one group) are
    scored at a time.

    The number of forward calls depends on the data. Where every forward is a collective (ZeRO-3, FSDP), pass
    `most_forwards(n)`: given this process's count, it returns the largest count of any process (a collective
    itself); this process then adds one-token forwards until it has made as many, so all processes stay in step.
    """
    width = prompt_ids.size(1)
    prompts = [ids[m.bool()].tolist() for ids, m in zip(prompt_ids.cpu(), prompt_mask.cpu(), strict=True)]
    rows = _Rows(prompts, [width - len(p) for p in prompts])
    cache_name = cache_kwarg(model)

    def encode(first: int, begin: int, end: int, start: int, parent):
        ids = torch.tensor([prompts[first][begin:end]], dtype=prompt_ids.dtype, device=prompt_ids.device)
        return _encode_prefix(model, ids, start, parent, begin, cache_name, autocast)

    plan = nest_groups(prompts, group_rows_by_prefix(prompts, min_shared), min_shared)
    keep_in_step(model, forward_count(plan, batch_size), most_forwards, prompt_ids, autocast)
    order, parts = [], []  # parts: (log-probs, entropies) of each chunk
    for root_len, family in plan:
        start = rows.starts[family[0].rows[0]]  # the whole family takes its first row's positions
        root = encode(family[0].rows[0], 0, root_len, start, None) if root_len else None
        for group in family:
            members, prefix_kv, group_start = list(group.rows), None, None
            if group.prefix_len:
                prefix_kv, group_start = encode(members[0], root_len, group.prefix_len, start, root), start
            else:
                members.sort(key=lambda i: len(prompts[i]))  # less padding per micro-batch
            for first in range(0, len(members), batch_size):
                chunk = members[first : first + batch_size]
                parts.append(
                    _score_suffixes(
                        model,
                        rows,
                        chunk,
                        group.prefix_len,
                        group_start,
                        prefix_kv,
                        completion_ids,
                        completion_mask,
                        cache_name,
                        autocast,
                    )  # fmt: skip
                )
                order += chunk
        del root
    logps = torch.cat([p[0] for p in parts], dim=0)  # (B, C), rows in `order`
    inverse = torch.empty(len(order), dtype=torch.long, device=logps.device)
    inverse[torch.tensor(order, device=logps.device)] = torch.arange(len(order), device=logps.device)
    entropy = torch.cat([p[1] for p in parts], dim=0)[inverse] if entropies else None
    return logps[inverse], entropy


def forward_count(plan, batch_size: int) -> int:
    """Forward calls `shared_prefix_logps` makes for a `nest_groups` plan: one per family root, one per group
    prefix, one per chunk of at most `batch_size` rows."""
    calls = 0
    for root_len, family in plan:
        calls += int(root_len > 0)
        for group in family:
            calls += int(group.prefix_len > 0) + -(-len(group.rows) // batch_size)
    return calls


def keep_in_step(model, own: int, most_forwards: Callable[[int], int] | None, like: torch.Tensor, autocast) -> None:
    """Sharded models (ZeRO-3, FSDP): given that this process makes `own` forward calls, add idle ones until it makes
    as many as the process that makes the most (`most_forwards`, a collective); nothing if `most_forwards` is None."""
    if most_forwards is not None:
        for _ in range(most_forwards(own) - own):
            _idle_forward(model, like, autocast)


def _idle_forward(model, like: torch.Tensor, autocast) -> None:
    """A forward over two tokens whose result is dropped: it only takes part in the collectives of a sharded model."""
    ids = like.new_zeros((1, 2))
    with autocast():
        model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids, fused_lm_head=True)


def _score_suffixes(
    model, rows, chunk, prefix_len, start, prefix_kv, completion_ids, completion_mask, cache_kwarg, autocast
) -> torch.Tensor:
    """Completion log-probs and entropies, each (b, C), of the rows `chunk`, their remaining prompt tokens read after
    `prefix_kv`."""
    device, n_completion = completion_ids.device, completion_ids.size(1)
    ids, positions, rest_mask = _suffix_batch(rows, chunk, prefix_len, start, completion_ids, device)
    attention = torch.cat(
        [rest_mask.new_ones((len(chunk), prefix_len)), rest_mask, completion_mask[chunk].to(rest_mask.dtype)], dim=1
    )  # (b, P + R + C)
    labels = ids.masked_fill(attention[:, prefix_len:] == 0, -100)
    labels[:, :-n_completion] = -100  # only the completion tokens are scored
    extra = {} if prefix_kv is None else {cache_kwarg: _prefix_cache(prefix_kv)}
    with autocast():
        out = model(
            input_ids=ids, attention_mask=attention, position_ids=positions, labels=labels, fused_lm_head=True, **extra
        )
    entropy = None if out.entropy is None else out.entropy[:, -n_completion:]
    return out.log_probs[:, -n_completion:], entropy
