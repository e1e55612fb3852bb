"""One agent episode while it runs, in either training unit (docs/method.md).

* `episode` unit: the whole episode is one completion. Model turns (env_mask 1) and the environment's replies
  (env_mask 0, chat-template tokens) are appended to one token list, generated from the concatenated ids.
* `turn` unit (the paper's loop): every step gets a fresh, bounded prompt (`prompts.step_prompt`: task, step count,
  last k (observation, action) pairs, current observation, admissible actions) and the model's answer to it becomes
  one training row (`TurnRecord`), its exact sampled ids.

The state here is plain data; `rollout.EnvRollout` drives the loop, batches generation and steps environments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from trl_sdar.agent.prompts import StepView, history_pairs_follow_the_action, remembered_observation, step_prompt
from trl_sdar.envs.base import AgentEnv, Observation, Task


@dataclass(frozen=True)
class TurnRecord:
    """One model turn: the prompt it answered (`turn` unit), its sampled ids and their sampling log-probs."""

    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float] | None
    valid: bool  # passed the format check (else the format penalty applies to this row)
    prompt_text: str = ""  # `turn` unit: the step's user message


@dataclass
class Episode:
    """Mutable state of one episode while it runs (internal to the rollout)."""

    task: Task
    env: AgentEnv
    prompt_ids: list[int]  # `episode` unit: the first prompt; `turn` unit: the first step's prompt
    observation: Observation | None = None
    completion_ids: list[int] = field(default_factory=list)  # `episode` unit transcript after the prompt
    env_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    records: list[TurnRecord] = field(default_factory=list)  # every model turn, both units
    history: list[tuple[str, str]] = field(default_factory=list)  # (observation, action) pairs, oldest first
    env_reward: float = 0.0
    turns: int = 0
    invalid_turns: int = 0
    won: bool = False
    score: float = 0.0
    done: bool = False
    budget_ended: bool = False  # `episode` unit: the token budget ended the episode (its last turn was cut)
    error: str = ""  # "exception" | "timeout" when the environment failed

    def add(self, ids: Sequence[int], mask_value: int, logprobs: Sequence[float] | None = None) -> None:
        self.completion_ids.extend(ids)
        self.env_mask.extend([mask_value] * len(ids))
        self.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))

    def reward(self, penalty: float) -> float:
        """Episode reward: a failed environment gives 0; otherwise env reward minus a penalty per invalid turn."""
        return 0.0 if self.error else self.env_reward - penalty * self.invalid_turns

    def row_reward(self, record: TurnRecord, penalty: float) -> float:
        """A `turn` row's reward, as the reference assembles it: the episode's env reward on every row, minus the
        penalty when *this* turn was format-invalid (0 for every row of a failed environment)."""
        return 0.0 if self.error else self.env_reward - (0.0 if record.valid else penalty)

    def view(self, history_window: int) -> StepView:
        """What this step's prompt shows: the last `history_window` pairs of the history."""
        recent = self.history[-history_window:] if history_window > 0 else []
        return StepView(self.task, self.observation, tuple(recent), steps_taken=len(self.history))

    def step_prompt_text(self, history_window: int) -> str:
        return step_prompt(self.env.name, self.env.action_tag, self.view(history_window))

    def remember(self, action: str, before: Observation, after: Observation) -> None:
        """Store one step in the history the way the reference's memory does for this environment."""
        if history_pairs_follow_the_action(self.env.name):
            self.history.append((remembered_observation(self.env.name, after, self.task), action))
        else:
            self.history.append((remembered_observation(self.env.name, before, self.task), action))
