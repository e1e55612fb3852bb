"""Multi-turn episodes → TRL `rollout_func` output (docs/method.md).

`EnvRollout` plays one episode per (already repeated) prompt, batching generation across the episodes of a batch
and stepping their environments concurrently in threads, with a timeout. Each GRPO group plays the same task: the
task is derived from the dataset row's prompt (built by `EnvRollout.dataset`). Two training units
(`RolloutSettings.rollout_unit`, see `agent/episode.py`):

* `episode`: one row per episode, the transcript as one completion (environment tokens masked); this is what
  `__call__` returns to any TRL trainer.
* `turn` (the paper's loop): one row per model turn, each on its own bounded prompt. The number of rows varies, so
  `SDARTrainer` drives it (`play` + `turn_rows`) and keeps TRL's accounting exact; `__call__` refuses it.

What the agent reads is in `agent/prompts.py`, how its text is read in `agent/parsing.py`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace

from trl_sdar.agent.chat import ChatTurns
from trl_sdar.agent.episode import Episode, TurnRecord
from trl_sdar.agent.generation import Generated, Generator, make_generator
from trl_sdar.agent.parsing import PARSERS, ParsedTurn, parse_turn
from trl_sdar.agent.prompts import STEP_TEMPLATES, StepView, search_action_text, step_prompt
from trl_sdar.envs.base import AgentEnv, Observation, StepResult, Task
from trl_sdar.method.teacher_sharding import any_over_processes
from trl_sdar.method.turns.advantages import ADVANTAGE_SCOPES

logger = logging.getLogger(__name__)
INVALID_FORMAT_FEEDBACK = "Invalid response: reason inside <think>…</think>, then answer with the required tags."
ROLLOUT_UNITS = ("episode", "turn")


@dataclass(frozen=True)
class RolloutSettings:
    """How episodes are played.

    rollout_unit: `"episode"` (the whole episode is one completion) or `"turn"` (one training row per model turn on
        the step template; the paper's loop).
    history_window: k past (observation, action) pairs in a `turn` prompt (paper: 2 for ALFWorld/WebShop, 4 for
        Search-QA).
    parser: `"reference"` (the paper's output parsing; invalid turns are still played) or `"strict"` (this project's
        earlier rules; invalid turns get a format message instead of a step). See `agent/parsing.py`.
    advantage_over: `turn` unit only: GRPO mean/std over every turn row of the group (`"turns"`, the reference
        default: long episodes weigh more) or over its episodes (`"episodes"`).
    """

    max_turns: int | None = None  # None: the environment's default (50 / 15 / 4)
    max_turn_tokens: int = 512  # per model turn
    max_episode_tokens: int | None = None  # `episode` unit; None: the trainer's max_completion_length
    step_timeout_s: float = 60.0
    num_workers: int = 8
    rollout_unit: str = "episode"
    history_window: int = 2
    parser: str = "reference"
    advantage_over: str = "turns"

    def __post_init__(self):
        if self.rollout_unit not in ROLLOUT_UNITS:
            raise ValueError(
                f"rollout_unit={self.rollout_unit!r} is not valid; expected one of {list(ROLLOUT_UNITS)}."
            )
        if self.parser not in PARSERS:
            raise ValueError(f"parser={self.parser!r} is not valid; expected one of {list(PARSERS)}.")
        if self.advantage_over not in ADVANTAGE_SCOPES:
            raise ValueError(
                f"advantage_over={self.advantage_over!r} is not valid; expected one of {list(ADVANTAGE_SCOPES)}."
            )
        if self.history_window < 0:
            raise ValueError(f"history_window={self.history_window!r} is not valid; expected an integer >= 0.")
        if self.max_turn_tokens < 1:
            raise ValueError(f"max_turn_tokens={self.max_turn_tokens!r} is not valid; expected an integer >= 1.")


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

    @property
    def rollout_unit(self) -> str:
        return self.settings.rollout_unit

    def _env(self, index: int) -> AgentEnv:
        while len(self._envs) <= index:
            self._envs.append(self.env_factory())
        return self._envs[index]

    # ------------------------------------------------------------------------------------------------ prompts
    def dataset(self, task_ids: Sequence[int], task_types: Sequence[str] | None = None):
        """A `datasets.Dataset` of tasks: `prompt` (chat), `task_id`, `task_type`, `privileged_context` (skills).

        `task_types`: keep only the tasks of these types (`trl_sdar.envs.selection.select_task_types`).
        """
        from datasets import Dataset

        from trl_sdar.envs.selection import select_task_types

        env, rows = self._env(0), []
        for task_id in select_task_types(env, task_ids, task_types):
            task = env.task(task_id)
            content, context = self._first_prompt(env, task, env.reset(task_id)), self._context(task)
            self._task_of_prompt[content] = task_id
            row = {"prompt": [{"role": "user", "content": content}], "task_id": task_id, "task_type": task.task_type}
            rows.append({**row, "privileged_context": context})
        return Dataset.from_list(rows)

    def _first_prompt(self, env: AgentEnv, task: Task, first: Observation) -> str:
        if env.name in STEP_TEMPLATES or self.rollout_unit == "turn":
            text = step_prompt(env.name, env.action_tag, StepView(task, first))
        else:
            text = env.prompt(task, first)  # a user-defined environment renders its own first message
        return self._with_student_skills(task, text)

    def _with_student_skills(self, task: Task, text: str) -> str:
        context = self._context(task) if self.student_sees_skills else None
        return f"{context}\n\n{text}" if context else text

    def _context(self, task: Task) -> str | None:
        if self.skills is None:
            return None
        if task.task_id not in self._skills_cache:
            self._skills_cache[task.task_id] = self.skills(task)
        return self._skills_cache[task.task_id]

    def _turn_context(self, task: Task, prompt_text: str) -> str | None:
        """A turn row's skills: skills that read the step prompt (`skills_rules: reference` on WebShop and Search-QA,
        as the reference code selects) are chosen from that turn's prompt; the others are the task's."""
        reads_prompt = getattr(self.skills, "reads_prompt", None)
        if reads_prompt is None or self.student_sees_skills or not reads_prompt(self.env_name):
            return self._context(task)
        return self.skills.for_prompt(task, prompt_text)

    def task_id_of(self, prompt) -> int:
        content = prompt[-1]["content"] if isinstance(prompt, list) else prompt
        if content not in self._task_of_prompt:
            raise KeyError("Prompt not produced by EnvRollout.dataset(); build the training dataset with it.")
        return self._task_of_prompt[content]

    # ------------------------------------------------------------------------------------------------ TRL entry
    def __call__(self, prompts: list, trainer) -> dict:
        """TRL `rollout_func(prompts, trainer)`: one episode per (already repeated) prompt, `episode` unit."""
        if self.rollout_unit == "turn":
            raise ValueError(
                "rollout_unit='turn' makes one training row per model turn (a varying number per prompt), which "
                "TRL's GRPOTrainer cannot take; train with trl_sdar.SDARTrainer (sdar_coef=0 for plain GRPO)."
            )
        episodes = self.play(prompts, trainer)
        return self.to_rollout_output(episodes, with_logprobs=trainer.args.use_vllm)

    def play(self, prompts: list, trainer) -> list[Episode]:
        """Play one episode per prompt with the trainer's model (its generation settings, vLLM when enabled) and
        log the `env/…` metrics through the trainer."""
        tokenizer = getattr(trainer.processing_class, "tokenizer", trainer.processing_class)
        generator = make_generator(trainer)
        budget = self.settings.max_episode_tokens or trainer.args.max_completion_length
        if self.rollout_unit == "turn":
            budget = min(self.settings.max_turn_tokens, trainer.args.max_completion_length)
        # vLLM (colocated) and sharded HF generation are collectives: every process plays the same number of turns
        in_step = trainer.args.use_vllm or getattr(generator, "collective", False)
        sync = any_over_processes(trainer.accelerator) if in_step else None
        task_ids = [self.task_id_of(p) for p in prompts]
        turns = ChatTurns(tokenizer, getattr(trainer, "chat_template_kwargs", None))
        with generator:  # frees the KV caches, or puts vLLM back to sleep, once the episodes are played
            episodes = self.run(task_ids, prompts, generator, turns, budget, any_active=sync)
        log_metric = getattr(trainer, "_log_metric", None)
        if log_metric is not None:
            for name, value in self.metrics(episodes).items():
                log_metric(name, value)
        return episodes

    # ------------------------------------------------------------------------------------------------ the loop
    def run(
        self,
        task_ids: Sequence[int],
        prompts: Sequence,
        generator: Generator,
        turns: ChatTurns,
        budget: int,
        any_active: Callable[[bool], bool] | None = None,
    ) -> list[Episode]:
        """Play one episode per task id (concurrently); `prompts` are the matching chat prompts. `budget` is the
        episode's token budget (`episode` unit) or the per-turn limit (`turn` unit)."""
        start, gen_s = time.perf_counter(), 0.0
        episodes = [
            Episode(self._env(i).task(t), self._env(i), turns.prompt_ids(p))
            for i, (t, p) in enumerate(zip(task_ids, prompts, strict=True))
        ]
        firsts = self._parallel(episodes, lambda e: e.env.reset(e.task.task_id))
        for e, first in zip(episodes, firsts, strict=True):
            e.observation = first
        for _ in range(self.max_turns):
            active = [e for e in episodes if not e.done]
            if not (any_active(bool(active)) if any_active else active):
                break
            t0 = time.perf_counter()
            if self.rollout_unit == "turn":
                texts = [self._turn_prompt_text(e) for e in active]
                contexts = [turns.prompt_ids([{"role": "user", "content": text}]) for text in texts]
                max_new = budget
            else:  # one generate call per turn: the largest remaining room; each episode is cut to its own room
                contexts = [e.prompt_ids + e.completion_ids for e in active]
                room = max((budget - len(e.completion_ids) for e in active), default=budget)  # empty: others play
                max_new = max(1, min(self.settings.max_turn_tokens, room))
            outs = generator.generate(contexts, max_new)
            gen_s += time.perf_counter() - t0
            self._play_turn(active, contexts, outs, turns, budget)
            if self.rollout_unit == "turn":
                for e, text in zip(active, texts, strict=True):
                    e.records[-1] = replace(e.records[-1], prompt_text=text)
        for e in episodes:
            e.done = True
        total = time.perf_counter() - start
        self.last_timing = {"total_s": total, "generate_s": gen_s, "env_s": total - gen_s}
        return episodes

    def _turn_prompt_text(self, e: Episode) -> str:
        return self._with_student_skills(e.task, e.step_prompt_text(self.settings.history_window))

    def _play_turn(
        self, active: list[Episode], contexts: list[list[int]], outs: list[Generated], turns: ChatTurns, budget: int
    ) -> None:
        parsed: dict[int, ParsedTurn | None] = {}
        for e, context, out in zip(active, contexts, outs, strict=True):
            room = budget - len(e.completion_ids) if self.rollout_unit == "episode" else budget
            ids = out.ids[:room]
            logprobs = out.logprobs[: len(ids)] if out.logprobs is not None else None
            cut = self._cut_by_budget(out.ids, room, turns)  # never parse or play a turn the budget ended
            text = turns.tokenizer.decode(ids, skip_special_tokens=True)
            p = None if cut else parse_turn(text, e.env.action_tag, rules=self.settings.parser, env_name=e.env.name)
            e.turns += 1
            e.invalid_turns += int(p is not None and not p.valid)
            prompt = context if self.rollout_unit == "turn" else []  # `episode` rows keep one prompt per episode
            e.records.append(TurnRecord(prompt, list(ids), logprobs, valid=p is not None and p.valid))
            if self.rollout_unit == "episode":
                e.add(ids, 1, logprobs)
            if cut:
                e.done = e.budget_ended = True
            parsed[id(e)] = p
        playing = [e for e in active if not e.done and self._action_to_play(parsed[id(e)]) is not None]
        stepped = self._parallel(playing, lambda e: e.env.step(self._action_to_play(parsed[id(e)])))
        results = {id(e): r for e, r in zip(playing, stepped, strict=True)}
        for e in active:
            if e.error:
                e.done = True
            elif not e.done:
                self._after_turn(e, parsed[id(e)], results.get(id(e)), turns, budget)

    def _cut_by_budget(self, ids: list[int], room: int, turns: ChatTurns) -> bool:
        """`episode` unit: whether the episode's token budget, not the model, ended this turn (the turn limit
        `max_turn_tokens` does not count: a turn it truncates is read as it is, like the reference does)."""
        if self.rollout_unit != "episode" or len(ids) < room:
            return False
        if len(ids) > room:
            return True
        ended = turns.closes_turn(ids) or ids[-1] == turns.tokenizer.eos_token_id
        return room < self.settings.max_turn_tokens and not ended

    def _action_to_play(self, p: ParsedTurn | None) -> str | None:
        if p is None or (not p.valid and self.settings.parser == "strict"):
            return None
        return p.action

    def _after_turn(self, e: Episode, p: ParsedTurn, result: StepResult | None, turns: ChatTurns, budget: int) -> None:
        before = e.observation
        action = self._action_to_play(p)
        after = result.observation if result is not None else Observation("", before.admissible_actions)
        if result is not None:
            e.env_reward += result.reward
            e.won, e.score = e.won or result.won, max(e.score, result.score)
            e.done = result.done
        shown = action if action is not None else ""  # a turn with nothing to play is remembered as empty
        e.remember(search_action_text(shown) if e.env.name == "search_qa" else shown, before, after)
        if result is not None:
            e.observation = result.observation
        if e.done or e.turns >= self.max_turns:
            e.done = True
            return
        if self.rollout_unit == "episode":
            reply = turns.reply_ids(self._reply_text(e, p, result), e.records[-1].completion_ids)
            if len(e.completion_ids) + len(reply) >= budget:
                e.done = e.budget_ended = True
            else:
                e.add(reply, 0)

    def _reply_text(self, e: Episode, p: ParsedTurn, result: StepResult | None) -> str:
        """The environment's message after a model turn (`episode` unit)."""
        if result is None and self.settings.parser == "strict":
            return f"{INVALID_FORMAT_FEEDBACK} ({p.reason})"
        if e.env.name not in STEP_TEMPLATES:
            return e.env.feedback(result) if result is not None else f"{INVALID_FORMAT_FEEDBACK} ({p.reason})"
        if e.env.name == "search_qa":
            return e.history[-1][0] or f"{INVALID_FORMAT_FEEDBACK} ({p.reason})"
        return step_prompt(e.env.name, e.env.action_tag, StepView(e.task, e.observation, (), len(e.history)))

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

    # ------------------------------------------------------------------------------------------------ outputs
    def metrics(self, episodes: list[Episode]) -> dict[str, float]:
        """`env/<name>/…` means over the episodes: success, score, turns, invalid rate, failures, per task type."""
        prefix, n = f"env/{self.env_name}", max(len(episodes), 1)
        out = {
            f"{prefix}/success": sum(e.won for e in episodes) / n,
            f"{prefix}/score": sum(e.score for e in episodes) / n,
            f"{prefix}/turns": sum(e.turns for e in episodes) / n,
            f"{prefix}/invalid_rate": sum(e.invalid_turns for e in episodes) / max(sum(e.turns for e in episodes), 1),
            f"{prefix}/budget_ended": sum(e.budget_ended for e in episodes) / n,
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

    def _episode_fields(self, e: Episode) -> dict:
        return {
            "success": float(e.won),
            "score": e.score,
            "turns": e.turns,
            "invalid_turns": e.invalid_turns,
            "env_error": e.error,
            "task_type": e.task.task_type,
            "privileged_context": self._context(e.task),
        }

    def to_rollout_output(self, episodes: list[Episode], with_logprobs: bool) -> dict:
        """`episode` unit: one row per episode (TRL's rollout_func output plus per-row extra fields)."""
        penalty = episodes[0].env.invalid_format_penalty if episodes else 0.0
        fields = [self._episode_fields(e) for e in episodes]
        return {
            "prompt_ids": [e.prompt_ids for e in episodes],
            "completion_ids": [e.completion_ids for e in episodes],
            "logprobs": [e.logprobs for e in episodes] if with_logprobs else None,
            "env_mask": [e.env_mask for e in episodes],
            "env_reward": [e.reward(penalty) for e in episodes],
            **{k: [f[k] for f in fields] for k in (fields[0] if fields else {})},
        }

    def turn_rows(self, episodes: list[Episode], with_logprobs: bool) -> dict:
        """`turn` unit: one row per model turn, in episode order. `episode_index` maps a row to its episode (the
        prompt it came from); `turn_index` is the turn's number in its episode; `env_reward` is the row's reward."""
        penalty = episodes[0].env.invalid_format_penalty if episodes else 0.0
        out: dict[str, list] = defaultdict(list)
        for index, e in enumerate(episodes):
            fields = self._episode_fields(e)
            for turn, record in enumerate(e.records):
                out["prompt"].append([{"role": "user", "content": record.prompt_text}])
                out["prompt_ids"].append(record.prompt_ids)
                out["completion_ids"].append(record.completion_ids)
                out["logprobs"].append(record.logprobs)
                out["env_mask"].append([1] * len(record.completion_ids))
                out["env_reward"].append(e.row_reward(record, penalty))
                out["episode_index"].append(index)
                out["turn_index"].append(turn)
                out["turn_valid"].append(record.valid)
                for key, value in fields.items():
                    out[key].append(value)
                out["privileged_context"][-1] = self._turn_context(e.task, record.prompt_text)
        rows = dict(out)
        if not with_logprobs:
            rows["logprobs"] = None
        return rows


def env_reward(completions, env_reward, **kwargs) -> list[float | None]:
    """Reward function for GRPO: the reward the rollout computed (env reward − format penalties); None for the
    padding rows the `turn` unit adds to even out ranks (TRL then leaves them out of its reward statistics)."""
    return [None if r is None else float(r) for r in env_reward]


__all__ = ["ChatTurns", "EnvRollout", "Episode", "RolloutSettings", "env_reward"]
