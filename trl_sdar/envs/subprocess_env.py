"""An environment in its own process: real parallelism for engines that are not thread-safe (ALFWorld's planner and
parser hold a process-wide lock), and a hung step can be killed instead of leaking a thread.

`SubprocessEnv("alfworld", difficulty=...)` speaks the same `AgentEnv` protocol as the environment it wraps.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from typing import Any

from trl_sdar.envs.base import Observation, StepResult, Task


def _serve(connection, name: str, kwargs: dict) -> None:
    from trl_sdar.envs import make_env

    try:
        env = make_env(name, **kwargs)
        connection.send(("ok", {k: getattr(env, k) for k in ("name", "max_turns", "invalid_format_penalty",
                                                                "action_tag")}))  # fmt: skip
    except Exception as error:  # report construction errors to the parent, which re-raises them
        connection.send(("error", f"{type(error).__name__}: {error}"))
        return
    while True:
        try:
            method, args = connection.recv()
        except EOFError:
            return
        if method == "close":
            env.close()
            return
        try:
            connection.send(("ok", getattr(env, method)(*args)))
        except Exception as error:
            connection.send(("error", f"{type(error).__name__}: {error}"))


class EnvProcessError(RuntimeError):
    """The environment raised inside its process (message carries the original type and text)."""


class SubprocessEnv:
    """Proxy to `make_env(name, **kwargs)` running in a spawned process. One caller at a time."""

    def __init__(self, name: str, **kwargs: Any):
        context = mp.get_context("spawn")  # fork after torch/threads start is unsafe
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, name, kwargs), daemon=True)
        self._process.start()
        child.close()
        self._lock = threading.Lock()
        attributes = self._receive()
        self.name = attributes["name"]
        self.max_turns = attributes["max_turns"]
        self.invalid_format_penalty = attributes["invalid_format_penalty"]
        self.action_tag = attributes["action_tag"]

    def _receive(self):
        try:
            status, value = self._conn.recv()
        except (EOFError, OSError) as error:
            raise EnvProcessError(f"environment process exited ({self._process.exitcode})") from error
        if status == "error":
            raise EnvProcessError(value)
        return value

    def _call(self, method: str, *args):
        with self._lock:
            try:
                self._conn.send((method, args))
            except OSError as error:  # BrokenPipeError after the process died or was closed
                raise EnvProcessError(f"environment process exited ({self._process.exitcode})") from error
            return self._receive()

    def task(self, task_id: int) -> Task:
        return self._call("task", task_id)

    def reset(self, task_id: int) -> Observation:
        return self._call("reset", task_id)

    def step(self, action: str) -> StepResult:
        return self._call("step", action)

    def prompt(self, task: Task, first: Observation) -> str:
        return self._call("prompt", task, first)

    def feedback(self, result: StepResult) -> str:
        return self._call("feedback", result)

    def expert_action(self) -> str:
        return self._call("expert_action")

    def close(self) -> None:
        """Stop the process; safe to call from another thread while a call hangs (the hung call then raises)."""
        if self._process.is_alive():
            self._process.kill()
        self._process.join(timeout=5)
