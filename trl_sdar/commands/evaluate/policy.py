"""Evaluate a policy on an environment over a pinned task list: success rate and score, per task type.

Policies here act on the parsed-action level (`expert`, `random`); model policies go through the rollout module.
Episodes run concurrently, one environment instance per worker thread.
"""

from __future__ import annotations

import random
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from trl_sdar.envs.base import AgentEnv, Observation

POLICIES = ("expert", "random")


@dataclass(frozen=True)
class EpisodeResult:
    task_id: int
    task_type: str
    won: bool
    score: float
    turns: int
    error: str = ""
    invalid_turns: int = 0  # model turns that failed the format check (scripted policies: 0)


def random_action(observation: Observation, env: AgentEnv, rng: random.Random) -> str:
    """A uniformly random admissible action; without a finite action list, a random word searched or answered."""
    if observation.admissible_actions:
        return rng.choice(list(observation.admissible_actions))
    words = re.findall(r"[A-Za-z]+", observation.text) or ["nothing"]
    return f"{rng.choice(['search', 'answer'])}[{rng.choice(words)}]"


def play_episode(
    env: AgentEnv, task_id: int, policy: str, rng: random.Random, max_turns: int | None = None
) -> EpisodeResult:
    """Play one episode with a scripted policy; an exception inside the environment ends it (counted, won=False)."""
    task = env.task(task_id)
    won, score, turns = False, 0.0, 0
    try:
        observation = env.reset(task_id)
        for turns in range(1, (max_turns or env.max_turns) + 1):  # noqa: B007 (turns is reported)
            action = env.expert_action() if policy == "expert" else random_action(observation, env, rng)
            result = env.step(action)
            observation, won, score = result.observation, won or result.won, max(score, result.score)
            if result.done:
                break
    except Exception as error:  # a broken task must not stop the evaluation of the others
        return EpisodeResult(task_id, task.task_type, False, 0.0, turns, f"{type(error).__name__}: {error}")
    return EpisodeResult(task_id, task.task_type, won, score, turns)


def evaluate_policy(
    env_factory: Callable[[], AgentEnv],
    task_ids: Sequence[int],
    policy: str,
    *,
    seed: int = 0,
    max_turns: int | None = None,
    num_workers: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> list[EpisodeResult]:
    """Play every task once with `policy` (`expert` or `random`), concurrently; results in task order."""
    if policy not in POLICIES:
        raise ValueError(f"Unknown policy {policy!r}; expected one of {list(POLICIES)} (models: use --model).")
    local = threading.local()
    done = [0]
    lock = threading.Lock()

    def run(index_and_task: tuple[int, int]) -> EpisodeResult:
        index, task_id = index_and_task
        if not hasattr(local, "env"):
            local.env = env_factory()
        result = play_episode(local.env, task_id, policy, random.Random(seed * 1_000_003 + index), max_turns)
        with lock:
            done[0] += 1
            if progress:
                progress(done[0], len(task_ids))
        return result

    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        return list(pool.map(run, enumerate(task_ids)))


def summarize(results: Sequence[EpisodeResult]) -> dict:
    """Success rate, mean score and turns overall and per task type, plus the episodes themselves."""
    n = max(len(results), 1)
    by_type: dict[str, list[EpisodeResult]] = defaultdict(list)
    for r in results:
        by_type[r.task_type].append(r)
    return {
        "num_tasks": len(results),
        "success_rate": sum(r.won for r in results) / n,
        "mean_score": sum(r.score for r in results) / n,
        "mean_turns": sum(r.turns for r in results) / n,
        "valid_format_rate": 1.0 - sum(r.invalid_turns for r in results) / max(sum(r.turns for r in results), 1),
        "env_errors": sum(bool(r.error) for r in results),
        "per_task_type": {
            t: {"num_tasks": len(rs), "success_rate": sum(r.won for r in rs) / len(rs)}
            for t, rs in sorted(by_type.items())
        },
        "episodes": [asdict(r) for r in results],
    }


def load_policy(model_path: str, device: str | None = None):
    """(model, tokenizer) from a full model folder or a PEFT adapter checkpoint (adapter_config.json), on `device`
    (default: the GPU when there is one, in bfloat16 where it supports it; else the CPU in float32)."""
    from pathlib import Path

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.startswith("cuda")
    dtype = torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else torch.float32
    path = Path(model_path)
    if (path / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(str(path), dtype=dtype).merge_and_unload()  # merged
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    model = model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def evaluate_model(
    model,
    tokenizer,
    env_factory: Callable[[], AgentEnv],
    task_ids: Sequence[int],
    *,
    seeds: Sequence[int] = (0,),
    temperature: float = 0.4,
    max_turns: int | None = None,
    max_turn_tokens: int = 512,
    max_episode_tokens: int = 8192,
    batch_size: int = 16,
    student_skills: Callable | None = None,
    progress: Callable[[int, int], None] | None = None,
    rollout_unit: str = "turn",
    history_window: int = 2,
    parser: str = "reference",
    transcripts: int = 0,
) -> dict:
    """Play every task once per seed with the model (sampling at `temperature`, the paper's 0.4) and report the
    success rate per seed, their mean and spread (avg@k), and per-type success averaged over seeds.

    `rollout_unit="turn"` (default, the paper's protocol) shows the agent the step prompt with the last
    `history_window` (observation, action) pairs at every turn; `"episode"` plays the whole episode as one growing
    transcript of at most `max_episode_tokens` tokens. `transcripts > 0` adds the model's turns (decoded, in order)
    of the first `transcripts` episodes of the first seed under `"transcripts"`, to see what the agent does."""
    import statistics

    import torch

    from trl_sdar.agent.generation import HFGenerator
    from trl_sdar.agent.rollout import ChatTurns, EnvRollout, RolloutSettings

    settings = RolloutSettings(
        max_turns=max_turns,
        max_turn_tokens=max_turn_tokens,
        num_workers=batch_size,
        rollout_unit=rollout_unit,
        history_window=history_window,
        parser=parser,
    )
    budget = max_turn_tokens if rollout_unit == "turn" else max_episode_tokens
    rollout = EnvRollout(
        env_factory, skills=student_skills, settings=settings, student_sees_skills=bool(student_skills)
    )
    prompts = [row["prompt"] for row in rollout.dataset(task_ids)]
    generator, turns = HFGenerator(model, tokenizer, temperature=temperature), ChatTurns(tokenizer)
    per_seed, done, kept = [], 0, []
    for seed in seeds:
        torch.manual_seed(seed)
        results = []
        for start in range(0, len(task_ids), batch_size):
            chunk = slice(start, start + batch_size)
            episodes = rollout.run(task_ids[chunk], prompts[chunk], generator, turns, budget)
            results += [
                EpisodeResult(e.task.task_id, e.task.task_type, e.won, e.score, e.turns, e.error, e.invalid_turns)
                for e in episodes
            ]
            if not per_seed:  # the first seed's episodes only
                kept += [transcript(e, tokenizer) for e in episodes[: max(transcripts - len(kept), 0)]]
            done += len(episodes)
            if progress:
                progress(done, len(task_ids) * len(seeds))
        per_seed.append({"seed": seed, **summarize(results)})
    rates = [s["success_rate"] for s in per_seed]
    types = sorted({t for s in per_seed for t in s["per_task_type"]})
    return {
        "success_rate": statistics.fmean(rates),
        "success_rate_std": statistics.pstdev(rates),
        "mean_score": statistics.fmean(s["mean_score"] for s in per_seed),
        "valid_format_rate": statistics.fmean(s["valid_format_rate"] for s in per_seed),
        "per_task_type": {
            t: statistics.fmean(s["per_task_type"][t]["success_rate"] for s in per_seed if t in s["per_task_type"])
            for t in types
        },
        "per_seed": per_seed,
        **({"transcripts": kept} if transcripts else {}),
    }


def transcript(episode, tokenizer) -> dict:
    """One played episode as text: its task, outcome and the model's turns (special tokens dropped)."""
    turns = [tokenizer.decode(r.completion_ids, skip_special_tokens=True) for r in episode.records]
    return {"task_id": episode.task.task_id, "task_type": episode.task.task_type, "won": episode.won,
            "invalid_turns": episode.invalid_turns, "turns": turns}  # fmt: skip
