"""The small typed interface every agent environment speaks: text in, text out.

Environments know nothing about tokens, chat templates or masks; the agent loop (`trl_sdar.agent`) owns those.
An environment is created for one benchmark configuration, `reset(task_id)` starts a deterministic task, and
`step(action)` plays one already-parsed action string (the text inside `<action>…</action>`, or for Search-QA
`search[query]` / `answer[text]`). Format checking of raw model output happens before `step`
(`trl_sdar.agent.parsing`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Task:
    """A task an environment can play. Everything needed to pick skills for it is here, not in the env state."""

    env_name: str  # "alfworld" | "webshop" | "search_qa"
    task_id: int  # deterministic: the same id always gives the same task
    instruction: str  # the goal in words, as the agent sees it ("put a clean mug in coffeemachine.")
    task_type: str  # ALFWorld: one of the 6 types; WebShop: product category; Search-QA: question kind
    info: dict[str, Any] = field(default_factory=dict)  # e.g. {"data_source": "hotpotqa"}, {"gamefile": path}


@dataclass(frozen=True)
class Observation:
    """What the agent sees after `reset` or a step."""

    text: str
    admissible_actions: tuple[str, ...] = ()  # empty when the env has no finite action list (Search-QA)


@dataclass(frozen=True)
class StepResult:
    """Outcome of one `step`. `reward` is the environment's own per-step reward (before any format penalty)."""

    observation: Observation
    reward: float
    done: bool
    won: bool = False  # task solved (ALFWorld won, WebShop score == 1.0, Search-QA exact match)
    score: float = 0.0  # graded outcome in [0, 1] (WebShop purchase score, EM for Search-QA, won for ALFWorld)
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class AgentEnv(Protocol):
    """One episode at a time; not thread-safe (the rollout runs one instance per concurrent episode)."""

    name: str  # "alfworld" | "webshop" | "search_qa"
    max_turns: int  # default turn limit of the benchmark (50 / 15 / 4)
    invalid_format_penalty: float  # per format-invalid turn (0.1 / 0.1 / 0.01)
    action_tag: str  # "action" for ALFWorld/WebShop; "search_qa" uses search/answer tags instead

    def task(self, task_id: int) -> Task:
        """Describe task `task_id` without starting it (cheap; used to select skills and build prompts)."""
        ...

    def reset(self, task_id: int) -> Observation:
        """Start task `task_id`; returns the first observation."""
        ...

    def step(self, action: str) -> StepResult:
        """Play one parsed action. A well-formed but inadmissible action is legal and changes nothing."""
        ...

    def prompt(self, task: Task, first: Observation) -> str:
        """The first user message of an episode: task, first observation, output-format instructions, actions."""
        ...

    def feedback(self, result: StepResult) -> str:
        """The user message that shows the agent the outcome of its last action (observation, admissible actions)."""
        ...

    def expert_action(self) -> str:
        """A parsed action (as `step` takes it) that an expert plays next from the current state."""
        ...

    def close(self) -> None: ...
