"""Pure helpers of the `turn` unit: GRPO advantages over turn rows, and even row counts across processes.

Advantages follow the reference's `compute_grpo_outcome_advantage` (docs/method.md): a row's score is its reward (the
episode's env reward minus the penalty if that turn was format-invalid); within a GRPO group (the episodes of one
task), the mean and the (unbiased) standard deviation are taken over every turn row (`over="turns"`, the
reference's default, so long episodes weigh more) or over one score per episode (`over="episodes"`: the score of the
episode's first row, as the reference keeps the first row it meets of each trajectory). A group with a single score
gets mean 0 and std 1. Advantage = (score − mean) / (std + 1e-6), or score − mean without scaling.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import torch

ADVANTAGE_SCOPES = ("turns", "episodes")
SCALES = ("group", "batch", "none")


def turn_advantages(
    scores: Sequence[float],
    groups: Sequence[Hashable],
    episodes: Sequence[Hashable],
    *,
    over: str = "turns",
    scale: str = "group",
    eps: float = 1e-6,
) -> torch.Tensor:
    """(N,) advantages of N turn rows. `groups[i]` is row i's GRPO group, `episodes[i]` its episode (any hashable).

    `scale`: `"group"` divides by the group's std (GRPO), `"none"` does not (Dr. GRPO), `"batch"` divides by the std
    of all contributing scores of the batch (TRL's `scale_rewards="batch"`).
    """
    if over not in ADVANTAGE_SCOPES:
        raise ValueError(f"over={over!r} is not valid; expected one of {list(ADVANTAGE_SCOPES)}.")
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r} is not valid; expected one of {list(SCALES)}.")
    contributing = _contributing(scores, groups, episodes, over)
    stats = {g: _mean_std(values) for g, values in contributing.items()}
    if scale == "batch":
        everything = [v for values in contributing.values() for v in values]
        batch_std = _mean_std(everything)[1] if len(everything) > 1 else 1.0
    out = []
    for score, group in zip(scores, groups, strict=True):
        mean, std = stats[group]
        centred = float(score) - mean
        if scale == "group":
            centred /= std + eps
        elif scale == "batch":
            centred /= batch_std + eps
        out.append(centred)
    return torch.tensor(out, dtype=torch.float32)


def zero_spread_share(scores: Sequence[float], groups: Sequence[Hashable], episodes: Sequence[Hashable], *,
                      over: str = "turns") -> float:  # fmt: skip
    """Share of the rows whose GRPO group has no spread in the scores its mean and std are taken over (no outcome
    signal; with `over="turns"` all its advantages are 0): TRL's `frac_reward_zero_std`, over the groups
    `turn_advantages` uses. TRL's own value groups `num_generations` consecutive rows, which in the `turn` unit are
    mostly turns of one episode, so it reads 1 where episodes differ."""
    if not scores:
        return 0.0
    flat = {g for g, values in _contributing(scores, groups, episodes, over).items()
            if len(values) > 1 and max(values) - min(values) <= 1e-8}  # fmt: skip
    return sum(group in flat for group in groups) / len(groups)


def _contributing(scores, groups, episodes, over: str) -> dict[Hashable, list[float]]:
    """Per group, the scores its mean and std are taken over: every turn row, or one per episode (the first)."""
    if not len(scores) == len(groups) == len(episodes):
        raise ValueError(f"scores, groups, episodes differ in length: {len(scores)}, {len(groups)}, {len(episodes)}")
    contributing: dict[Hashable, list[float]] = {}
    seen = set()
    for score, group, episode in zip(scores, groups, episodes, strict=True):
        if over == "episodes":
            if (group, episode) in seen:
                continue
            seen.add((group, episode))
        contributing.setdefault(group, []).append(float(score))
    return contributing


def _mean_std(values: list[float]) -> tuple[float, float]:
    if len(values) == 1:
        return 0.0, 1.0  # the reference's rule for a group with one score
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def padded_row_count(counts: Sequence[int], multiple: int) -> int:
    """Rows every process trains on: the largest count, rounded up to `multiple` (at least one `multiple`)."""
    if multiple < 1:
        raise ValueError(f"multiple={multiple!r} must be >= 1")
    largest = max(max(counts, default=0), 1)
    return -(-largest // multiple) * multiple


def row_multiple(steps_per_generation: int, num_generations: int, num_processes: int) -> int:
    """The smallest row count per process that splits into `steps_per_generation` equal micro-batches and whose
    total over processes is a multiple of `num_generations` (TRL reshapes rewards into groups of that size)."""
    per_process_groups = num_generations // math.gcd(num_generations, num_processes)
    return math.lcm(steps_per_generation, per_process_groups)
