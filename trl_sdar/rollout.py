"""Multi-turn episodes → TRL `rollout_func` output (METHOD.md §6, DESIGN.md "Multi-turn").

The whole episode is one completion: model tokens (env_mask 1) generated from the concatenated ids, and the
environment's replies inserted as chat-template tokens (env_mask 0), never re-tokenising what the model wrote. Each
GRPO group plays the same task: the task is derived from the dataset row's prompt (built by `EnvRollout.dataset`).
Generation is batched across the episodes of a batch; environment steps run concurrently in threads, with a timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

from .envs.base import AgentEnv, Observation, Task
from .envs.protocol import parse_turn
from .generation import Generated, Generator, make_generator

logger = logging.getLogger(__name__)
INVALID_FORMAT_FEEDBACK = "Invalid response: reason inside <think>…</think>, then answer with the required tags."


class ChatTurns:
    """Token ids of the environment's reply after a model turn, cut from the chat template itself.

    The reply is what the template puts after an assistant message when a user message follows and the next assistant
    turn opens: `<|im_end|>\n<|im_start|>user\n{feedback}<|im_end|>\n<|im_start|>assistant\n` for ChatML. Only that
    continuation is rendered, never the history, so templates that re-render earlier turns differently (Qwen3 drops
    their `<think>` blocks) work too; `chat_template_kwargs` (e.g. `enable_thinking: false`) are applied.
    """

    _ASSISTANT, _FEEDBACK = "\x00ASSISTANT\x00", "\x00FEEDBACK\x00"

    def __init__(self, tokenizer, chat_template_kwargs: dict | None = None):
        self.tokenizer = tokenizer
        self.template_kwargs = dict(chat_template_kwargs or {})
        convo = [
            {"role": "user", "content": "U"},
            {"role": "assistant", "content": self._ASSISTANT},
            {"role": "user", "content": self._FEEDBACK},
        ]
        rendered = self._render(convo)
        if self._ASSISTANT not in rendered or self._FEEDBACK not in rendered:
            raise ValueError("The chat template drops message contents; multi-turn rollouts cannot use it.")
        tail = rendered[rendered.index(self._ASSISTANT) + len(self._ASSISTANT) :]
        eos_text = tokenizer.eos_token or ""
        self._after_eos = tail[len(eos_text) :] if eos_text and tail.startswith(eos_text) else tail
        self.eos_token_id = tokenizer.eos_token_id

    def _render(self, messages) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **self.template_kwargs
        )

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        return self.tokenizer(self._render(messages), add_special_tokens=False)["input_ids"]

    def reply_ids(self, feedback: str, model_ended_with_eos: bool) -> list[int]:
        """Environment tokens after a model turn: close the turn (EOS if the model did not), the user message with
        `feedback`, and the next assistant header."""
        ids = self.tokenizer(self._after_eos.replace(self._FEEDBACK, feedback), add_special_tokens=False)["input_ids"]
        return ids if model_ended_with_eos else [self.eos_token_id, *ids]


@dataclass
class Episode:
    """Mutable state of one episode while it runs (internal to the rollout)."""

    task: Task
    env: AgentEnv
    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    env_reward: float = 0.0
    turns: int = 0
    invalid_turns: int = 0
    won: bool = False
    score: float = 0.0
    done: bool = False
    error: str = ""  # "exception" | "timeout" when the environment failed

    def add(self, ids: Sequence[int], mask_value: int, logprobs: Sequence[float] | None = None) -> None:
        self.completion_ids.extend(ids)
        self.env_mask.extend([mask_value] * len(ids))
        self.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))

    def reward(self, penalty: float) -> float:
        # A failed environment ends the episode with reward 0; otherwise env reward minus format penalties.
        return 0.0 if self.error else self.env_reward - penalty * self.invalid_turns


@dataclass(frozen=True)
class RolloutSettings:
    max_turns: int | None = None  # None: the environment's default (50 / 15 / 4)
    max_turn_tokens: int = 512  # per model turn
    max_episode_tokens: int | None = None  # None: the trainer's max_completion_length
    step_timeout_s: float = 60.0
    num_workers: int = 8


class EnvRollout:
    """A TRL `rollout_func` that plays `env_factory()` environments; also builds the task dataset it expects."""

    def __init__(
        self,
        env_factory: Callable[[], AgentEnv],
        *,
        skills: Callable[[Task], str] | None = None,
        settings: RolloutSettings | None = None,
        student_sees_skills: bool = False,
    ):
        self.env_factory = env_factory
        self.skills = skills
        self.student_sees_skills = student_sees_skills  # the Skill-GRPO baseline: skills in the student prompt too
        self.settings = settings or RolloutSettings()
        self._envs: list[AgentEnv] = []
        self._task_of_prompt: dict[str, int] = {}
        self._skills_cache: dict[int, str] = {}
        self._pool = ThreadPoolExecutor(max_workers=self.settings.num_workers, thread_name_prefix="env")
        probe = self._env(0)
        self.env_name, self.max_turns = probe.name, self.settings.max_turns or probe.max_turns
        self.last_timing: dict[str, float] = {}

    def _env(self, index: int) -> AgentEnv:
        while len(self._envs) <= index:
            self._envs.append(self.env_factory())
        return self._envs[index]

    def dataset(self, task_ids: Sequence[int]):
        """A `datasets.Dataset` of tasks: `prompt` (chat), `task_id`, `task_type`, `privileged_context` (skills)."""
        from datasets import Dataset

        env, rows = self._env(0), []
        for task_id in task_ids:
            task = env.task(task_id)
            content, context = env.prompt(task, env.reset(task_id)), self._context(task)
            if self.student_sees_skills and context:
                content = f"{context}\n\n{content}"
            self._task_of_prompt[content] = task_id
            row = {"prompt": [{"role": "user", "content": content}], "task_id": task_id, "task_type": task.task_type}
            rows.append({**row, "privileged_context": context})
        return Dataset.from_list(rows)

    def _context(self, task: Task) -> str | None:
        if self.skills is None:
            return None
        if task.task_id not in self._skills_cache:
            self._skills_cache[task.task_id] = self.skills(task)
        return self._skills_cache[task.task_id]

    def task_id_of(self, prompt) -> int:
        content = prompt[-1]["content"] if isinstance(prompt, list) else prompt
        if content not in self._task_of_prompt:
            raise KeyError("Prompt not produced by EnvRollout.dataset(); build the training dataset with it.")
        return self._task_of_prompt[content]

    def __call__(self, prompts: list, trainer) -> dict:
        """TRL `rollout_func(prompts, trainer)`: one episode per (already repeated) prompt."""
        tokenizer = trainer.processing_class
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
        generator = make_generator(trainer)
        budget = self.settings.max_episode_tokens or trainer.args.max_completion_length
        sync = _any_active_fn(trainer.accelerator) if trainer.args.use_vllm else None
        task_ids = [self.task_id_of(p) for p in prompts]
        turns = ChatTurns(tokenizer, getattr(trainer, "chat_template_kwargs", None))
        with generator:  # frees the KV caches, or puts vLLM back to sleep, once the episodes are played
            episodes = self.run(task_ids, prompts, generator, turns, budget, any_active=sync)
        log_metric = getattr(trainer, "_log_metric", None)
        if log_metric is not None:
            for name, value in self.metrics(episodes).items():
                log_metric(name, value)
        return self.to_rollout_output(episodes, with_logprobs=trainer.args.use_vllm)

    def run(
        self,
        task_ids: Sequence[int],
        prompts: Sequence,
        generator: Generator,
        turns: ChatTurns,
        budget: int,
        any_active: Callable[[bool], bool] | None = None,
    ) -> list[Episode]:
        """Play one episode per task id (concurrently); `prompts` are the matching chat prompts."""
        start, gen_s = time.perf_counter(), 0.0
        episodes = [
            Episode(self._env(i).task(t), self._env(i), turns.prompt_ids(p))
            for i, (t, p) in enumerate(zip(task_ids, prompts, strict=True))
        ]
        self._parallel(episodes, lambda e: e.env.reset(e.task.task_id))
        for _ in range(self.max_turns):
            active = [e for e in episodes if not e.done]
            if not (any_active(bool(active)) if any_active else active):
                break
            t0 = time.perf_counter()
            # one generate call per turn: the largest remaining room; each episode is cut to its own room after
            room = max((budget - len(e.completion_ids) for e in active), default=budget)  # empty: other ranks play
            max_new = max(1, min(self.settings.max_turn_tokens, room))
            outs = generator.generate([e.prompt_ids + e.completion_ids for e in active], max_new)
            gen_s += time.perf_counter() - t0
            self._play_turn(active, outs, turns, budget)
        for e in episodes:
            e.done = True
        total = time.perf_counter() - start
        self.last_timing = {"total_s": total, "generate_s": gen_s, "env_s": total - gen_s}
        return episodes

    def _play_turn(self, active: list[Episode], outs: list[Generated], turns: ChatTurns, budget: int) -> None:
        parsed = []
        for e, out in zip(active, outs, strict=True):
            e.add(out.ids[: budget - len(e.completion_ids)], 1, out.logprobs)
            e.turns += 1
            text = turns.tokenizer.decode(out.ids, skip_special_tokens=True)
            parsed.append(parse_turn(text, e.env.action_tag))
        action_of = {id(e): p.action for e, p in zip(active, parsed, strict=True) if p.valid}
        stepping = [e for e in active if id(e) in action_of]
        stepped = self._parallel(stepping, lambda e: e.env.step(action_of[id(e)]))
        results = {id(e): r for e, r in zip(stepping, stepped, strict=True)}
        for e, out, p in zip(active, outs, parsed, strict=True):
            result = results.get(id(e))
            if e.error:
                e.done = True
                continue
            if result is None:
                e.invalid_turns += 1
                feedback = f"{INVALID_FORMAT_FEEDBACK} ({p.reason})"
            else:
                e.env_reward += result.reward
                e.won, e.score = e.won or result.won, max(e.score, result.score)
                e.done = result.done
                feedback = e.env.feedback(result)
            ended = bool(out.ids) and out.ids[-1] == turns.eos_token_id
            reply = turns.reply_ids(feedback, ended)
            if e.done or e.turns >= self.max_turns or len(e.completion_ids) + len(reply) >= budget:
                e.done = True
            else:
                e.add(reply, 0)

    def _parallel(self, episodes: list[Episode], fn: Callable[[Episode], object]) -> list[object]:
        futures = [self._pool.submit(fn, e) for e in episodes]
        results = []
        for e, future in zip(episodes, futures, strict=True):
            try:
                results.append(future.result(timeout=self.settings.step_timeout_s))
            except FutureTimeout:
                e.error, e.done = "timeout", True
                self._replace_env(e.env)  # a hung env keeps its thread; never hand it out again
                results.append(None)
            except Exception:  # an environment bug ends that episode only; the batch goes on
                logger.exception(f"{self.env_name}: environment raised; the episode ends with reward 0")
                e.error, e.done = "exception", True
                results.append(None)
        return results

    def _replace_env(self, env: AgentEnv) -> None:
        for i, candidate in enumerate(self._envs):
            if candidate is env:
                self._envs[i] = self.env_factory()
        threading.Thread(target=env.close, daemon=True).start()  # may block on a hung in-thread env: never wait

    def metrics(self, episodes: list[Episode]) -> dict[str, float]:
        """`env/<name>/…` means over the episodes: success, score, turns, invalid rate, failures, per task type."""
        prefix, n = f"env/{self.env_name}", max(len(episodes), 1)
        out = {
            f"{prefix}/success": sum(e.won for e in episodes) / n,
            f"{prefix}/score": sum(e.score for e in episodes) / n,
            f"{prefix}/turns": sum(e.turns for e in episodes) / n,
            f"{prefix}/invalid_rate": sum(e.invalid_turns for e in episodes) / max(sum(e.turns for e in episodes), 1),
            f"{prefix}/env_errors": float(sum(e.error == "exception" for e in episodes)),
            f"{prefix}/env_timeouts": float(sum(e.error == "timeout" for e in episodes)),
        }
        by_type = defaultdict(list)
        for e in episodes:
            by_type[e.task.task_type].append(e.won)
        out.update({f"{prefix}/success/{t}": sum(w) / len(w) for t, w in sorted(by_type.items())})
        if self.last_timing.get("total_s"):
            out[f"{prefix}/env_time_share"] = self.last_timing["env_s"] / self.last_timing["total_s"]
        return out

    def to_rollout_output(self, episodes: list[Episode], with_logprobs: bool) -> dict:
        penalty = episodes[0].env.invalid_format_penalty if episodes else 0.0
        return {
            "prompt_ids": [e.prompt_ids for e in episodes],
            "completion_ids": [e.completion_ids for e in episodes],
            "logprobs": [e.logprobs for e in episodes] if with_logprobs else None,
            "env_mask": [e.env_mask for e in episodes],
            "env_reward": [e.reward(penalty) for e in episodes],
            "success": [float(e.won) for e in episodes],
            "score": [e.score for e in episodes],
            "turns": [e.turns for e in episodes],
            "invalid_turns": [e.invalid_turns for e in episodes],
            "env_error": [e.error for e in episodes],
            "task_type": [e.task.task_type for e in episodes],
            "privileged_context": [self._context(e.task) for e in episodes],
        }


def _any_active_fn(accelerator) -> Callable[[bool], bool]:
    import torch

    def any_active(local: bool) -> bool:
        flag = torch.tensor([float(local)], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)

    return any_active


def env_reward(completions, env_reward, **kwargs) -> list[float]:
    """Reward function for GRPO: the episode reward the rollout computed (env reward − format penalties)."""
    return [float(r) for r in env_reward]


__all__ = ["ChatTurns", "EnvRollout", "Episode", "Observation", "RolloutSettings", "env_reward"]
