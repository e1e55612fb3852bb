"""A generation batch of turn rows: play this process's episodes, pad every process to the same row count, hand
the rows to TRL's scoring as if each were a prompt, then replace TRL's advantages with the turn-row GRPO advantages
(`advantages.py`) over the rows of all processes.

Padding rows carry one masked prompt token and one masked completion token: they train nothing, get advantage 0
and no teacher context. Every process scores the same number of rows, so TRL's collectives stay in lockstep.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trl_sdar.method.turns.advantages import padded_row_count, row_multiple, turn_advantages, zero_spread_share
from trl_sdar.method.turns.logged import retell_batch


@dataclass
class TurnRows:
    """This process's rows of one generation batch, ready for TRL's scoring."""

    row_inputs: list[dict]  # one input dict per row: the episode's dataset row + the turn's fields; padding last
    replay: dict  # what `rollout_func` returns to TRL for these rows (token ids, env masks, sampling log-probs)
    local: list[tuple]  # (GRPO group, episode, reward) of each real row, in global episode numbering
    counts: list[int]  # real rows of every process
    target: int  # rows of every process after padding


def padding_row(template: dict, tokenizer, context_column: str, fields) -> dict:
    """A row that trains nothing: one prompt and one completion token, both masked out of every loss."""
    row = {**template, **{key: None for key in fields}}
    row.update(prompt_ids=[tokenizer.pad_token_id], completion_ids=[tokenizer.eos_token_id], env_mask=[0])
    return {**row, "env_reward": None, context_column: None}


def play_turn_rows(trainer, inputs: list[dict], mode: str) -> TurnRows:
    """Play the episodes of `inputs` (this process's prompts, each repeated `num_generations` times) and pad."""
    episodes = trainer.rollout_func.play([x["prompt"] for x in inputs], trainer)
    rows = trainer.rollout_func.turn_rows(episodes, with_logprobs=trainer.use_vllm)
    accelerator = trainer.accelerator
    real = len(rows["prompt_ids"])
    counts = accelerator.gather(torch.tensor([real], device=accelerator.device)).tolist()
    generations = trainer.num_generations if mode == "train" else trainer.num_generations_eval
    spg = trainer.args.steps_per_generation if mode == "train" else 1
    target = padded_row_count(counts, row_multiple(spg, generations, accelerator.num_processes))
    first = accelerator.process_index * len(inputs)  # global index of this process's first episode
    row_inputs = [{**inputs[i], **{k: v[j] for k, v in rows.items() if k != "logprobs"}}
                  for j, i in enumerate(rows["episode_index"])]  # fmt: skip
    padding = padding_row(inputs[0], trainer._tokenizer, trainer.args.teacher_context_column, rows)
    row_inputs += [dict(padding) for _ in range(target - real)]
    replay = {key: [r[key] for r in row_inputs] for key in ("prompt_ids", "completion_ids", "env_mask")}
    replay["logprobs"] = None if rows["logprobs"] is None else rows["logprobs"] + [[0.0]] * (target - real)
    # GRPO group = the num_generations consecutive prompts of one task (TRL's sampler), episode = its prompt
    local = [((first + i) // generations, first + i, r) for i, r in zip(rows["episode_index"], rows["env_reward"])]
    return TurnRows(row_inputs, replay, local, counts, target)


def set_turn_advantages(trainer, rows: TurnRows, output: dict, mode: str) -> None:
    """Replace TRL's advantages in `output` with the reference's GRPO advantages over the turn rows of all processes
    (0 for padding rows); log the turn metrics and the zero-spread share over the groups actually used."""
    from accelerate.utils import gather_object

    accelerator, metrics = trainer.accelerator, trainer._metrics[mode]
    everything = gather_object(rows.local)
    groups, episodes, scores = zip(*everything, strict=True) if everything else ((), (), ())
    over = trainer.rollout_func.settings.advantage_over
    advantages = turn_advantages(scores, groups, episodes, over=over, scale=trainer.scale_rewards)
    if metrics["frac_reward_zero_std"]:  # TRL's value, over its own grouping of the rows: replace it
        metrics["frac_reward_zero_std"][-1] = zero_spread_share(scores, groups, episodes, over=over)
    like = output["advantages"]
    offset = sum(rows.counts[: accelerator.process_index])  # this process's first row in the gathered list
    mine = torch.zeros(rows.target, dtype=like.dtype, device=like.device)
    mine[: len(rows.local)] = advantages[offset : offset + len(rows.local)].to(like.device)
    output["advantages"] = mine
    total_rows = sum(rows.counts)
    output["num_rows_in_batch"] = torch.tensor(float(total_rows), device=accelerator.device)
    metrics["turn/rows"].append(total_rows / accelerator.num_processes)
    metrics["turn/padding_rows"].append(float(rows.target * len(rows.counts) - total_rows))
    metrics["turn/trained_tokens"].append(float(output["num_items_in_batch"]))
    retell_batch(trainer, rows, output, mode, advantages)  # TRL's logs of this batch, without the padding rows
