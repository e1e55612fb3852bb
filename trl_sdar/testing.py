"""Helpers for tests, demos and benchmarks: a scripted agent environment and the tiny offline model.

`ScriptedEnv` speaks the typed protocol of `trl_sdar.envs.base` without any engine behind it: a task is finished
after a known number of counted steps, so a test knows in advance every observation, reward and turn count of an
episode. One `Script` (frozen settings) describes a variant; the presets are the variants the test suite plays:

* `ScriptedEnv.counter(release=None)`: "counter", `inc` until `task_id % 3 + 1`, reward 10; `boom` raises and `hang`
  blocks until `release` is set (failure handling of the rollout);
* `ScriptedEnv.counting()`: "counting", `inc` `task_id` times, reward 1, task type `len{task_id}`;
* `ScriptedEnv.fake_alfworld()`: named "alfworld" so the ALFWorld step template renders it, three `inc` win;
* `ScriptedEnv.fixed_length()`: "fixed", `task_id % 3 + 1` steps whatever the action, won only for even ids.

`EnvRollout` takes a zero-argument factory: pass a preset (`EnvRollout(ScriptedEnv.counter)`) or
`functools.partial(ScriptedEnv.counter, release=event)`. `make_tiny_model_dir` builds the tiny chat model;
`free_port()` finds a TCP port for a test's process group; `run_two_processes` starts a worker script as 2 local
processes (torch's launcher, gloo on CPU); `rank_reports` does so for a worker that writes one JSON report per rank.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from trl_sdar.envs.base import Observation, StepResult, Task
from trl_sdar.models.tiny import make_tiny_model_dir


def _always(task_id: int) -> bool:
    return True


@dataclass(frozen=True)
class Script:
    """How a scripted environment behaves. Text fields are `str.format` templates over `task_id`, `needed` (the
    counted steps task `task_id` takes), `count` (counted steps so far) and `left` (`needed - count`)."""

    name: str
    steps: Callable[[int], int]  # counted steps that end task `task_id`
    instruction: str  # the task's goal in words
    task_type: Callable[[int], str]
    first_text: str  # the observation after `reset`
    step_text: str  # the observation after a step
    actions: tuple[str, ...] = ("inc",)  # admissible actions; the first one is the expert's
    counted: str | None = "inc"  # the action that advances the task; None: every action does
    win_reward: float = 10.0  # reward of the step that wins (every other step: 0)
    wins: Callable[[int], bool] = _always  # whether finishing task `task_id` is a win
    max_turns: int = 6
    invalid_format_penalty: float = 0.1
    actions_after_steps: bool = True  # step observations list the admissible actions too
    described: tuple[str, ...] | None = None  # actions answered with `step_text` (None: all); others get `other_text`
    other_text: str = ""
    failures: bool = False  # `boom` raises RuntimeError; `hang` waits for the release event (then does nothing)
    hang_timeout_s: float = 5.0  # the longest a `hang` waits


COUNTER = Script(
    name="counter", steps=lambda t: t % 3 + 1, instruction="count to {needed}", task_type=lambda t: f"type{t % 2}",
    first_text="value 0, target {needed}", step_text="value {count}", actions_after_steps=False, failures=True,
)  # fmt: skip
COUNTING = Script(
    name="counting", steps=lambda t: t, instruction="count to {task_id}", task_type=lambda t: f"len{t}",
    first_text="value 0, target {task_id}", step_text="value {count}", win_reward=1.0, actions_after_steps=False,
)  # fmt: skip
FAKE_ALFWORLD = Script(
    name="alfworld", steps=lambda t: 3, instruction="count to three.", task_type=lambda t: "pick_and_place",
    first_text="You are in a room. Your task is to: count to three.", step_text="The counter shows {count}.",
    actions=("inc", "look", "help"), max_turns=5, described=("inc", "look"), other_text="Nothing happens.",
)  # fmt: skip
FIXED_LENGTH = Script(
    name="fixed", steps=lambda t: t % 3 + 1, instruction="task {task_id}", task_type=lambda t: f"type{t % 2}",
    first_text="start {task_id}", step_text="{left} left", actions=("wait",), counted=None,
    wins=lambda t: t % 2 == 0, max_turns=5,
)  # fmt: skip


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now (for a multi-process test's rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_two_processes(script, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `script` with `args` as 2 processes of one process group on this machine (`torch.distributed.run`, a free
    rendezvous port, one thread each); returns the launcher's completed process (output captured as text)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(script), *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def rank_reports(script, model_dir: str, out_dir, *flags: str, timeout: float = 300):
    """Run a worker `script MODEL_DIR OUT_DIR [flags]` as 2 processes (`run_two_processes`) that writes
    `<out_dir>/rank<r>.json`; returns the completed launcher and both ranks' reports (None where a rank wrote none)."""
    import json
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True)
    result = run_two_processes(script, model_dir, str(out), *flags, timeout=timeout)
    files = [out / f"rank{rank}.json" for rank in (0, 1)]
    return result, [json.loads(f.read_text()) if f.is_file() else None for f in files]


class ScriptedEnv:
    """An `AgentEnv` that plays `script`. `steps` counts every `step` call (failures included) over its lifetime."""

    action_tag = "action"

    def __init__(self, script: Script, release: threading.Event | None = None):
        self.script, self.release = script, release
        self.name, self.max_turns = script.name, script.max_turns
        self.invalid_format_penalty = script.invalid_format_penalty
        self.task_id, self.needed, self.count, self.steps = 0, 0, 0, 0

    @classmethod
    def counter(cls, release: threading.Event | None = None) -> ScriptedEnv:
        return cls(COUNTER, release)

    @classmethod
    def counting(cls) -> ScriptedEnv:
        return cls(COUNTING)

    @classmethod
    def fake_alfworld(cls) -> ScriptedEnv:
        return cls(FAKE_ALFWORLD)

    @classmethod
    def fixed_length(cls) -> ScriptedEnv:
        return cls(FIXED_LENGTH)

    def _text(self, template: str, task_id: int | None = None) -> str:
        task_id = self.task_id if task_id is None else task_id
        needed = self.script.steps(task_id)
        return template.format(task_id=task_id, needed=needed, count=self.count, left=needed - self.count)

    def task(self, task_id: int) -> Task:
        s = self.script
        return Task(s.name, task_id, self._text(s.instruction, task_id), s.task_type(task_id))

    def reset(self, task_id: int) -> Observation:
        self.task_id, self.needed, self.count = task_id, self.script.steps(task_id), 0
        return Observation(self._text(self.script.first_text), self.script.actions)

    def step(self, action: str) -> StepResult:
        s = self.script
        self.steps += 1
        if s.failures and action == "boom":
            raise RuntimeError("environment bug")
        if s.failures and action == "hang":
            (self.release or threading.Event()).wait(s.hang_timeout_s)
        if s.counted is None or action == s.counted:
            self.count += 1
        done = self.count >= self.needed
        won = done and s.wins(self.task_id)
        text = self._text(s.step_text) if s.described is None or action in s.described else s.other_text
        observation = Observation(text, s.actions if s.actions_after_steps else ())
        return StepResult(observation, s.win_reward if won else 0.0, done, won, float(won))

    def prompt(self, task: Task, first: Observation) -> str:
        return f"{task.instruction}. {first.text}"

    def feedback(self, result: StepResult) -> str:
        return result.observation.text

    def expert_action(self) -> str:
        return self.script.actions[0]

    def close(self) -> None:
        pass


__all__ = [
    "COUNTER",
    "COUNTING",
    "FAKE_ALFWORLD",
    "FIXED_LENGTH",
    "Script",
    "ScriptedEnv",
    "free_port",
    "make_tiny_model_dir",
]
