"""The scripted environments of `trl_sdar.testing`: every preset's texts, rewards, endings and failure actions."""

import threading
import time
from dataclasses import replace
from functools import partial

import pytest

from trl_sdar.envs.base import AgentEnv, Observation, Task
from trl_sdar.models.tiny import make_tiny_model_dir as tiny_builder
from trl_sdar.testing import COUNTER, FIXED_LENGTH, ScriptedEnv, make_tiny_model_dir

PRESETS = [ScriptedEnv.counter, ScriptedEnv.counting, ScriptedEnv.fake_alfworld, ScriptedEnv.fixed_length]


def _play(env, task_id, actions):
    env.reset(task_id)
    return [env.step(a) for a in actions]


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.__name__)
def test_presets_speak_the_protocol(preset):
    env = preset()
    assert isinstance(env, AgentEnv) and env.action_tag == "action" and env.invalid_format_penalty == 0.1
    env.close()


def test_counter():
    env = ScriptedEnv.counter()
    assert (env.name, env.max_turns) == ("counter", 6)
    assert env.task(4) == Task("counter", 4, "count to 2", "type0")
    assert env.task(5) == Task("counter", 5, "count to 3", "type1")
    first = env.reset(4)
    assert first == Observation("value 0, target 2", ("inc",))
    assert env.prompt(env.task(4), first) == "count to 2. value 0, target 2"
    look, inc1, inc2 = env.step("look"), env.step("inc"), env.step("inc")
    assert [r.observation for r in (look, inc1, inc2)] == [Observation("value 0"), Observation("value 1"),
                                                           Observation("value 2")]  # fmt: skip
    assert [(r.reward, r.done, r.won, r.score) for r in (look, inc1, inc2)] == [
        (0.0, False, False, 0.0), (0.0, False, False, 0.0), (10.0, True, True, 1.0)
    ]  # fmt: skip
    assert env.feedback(inc1) == "value 1" and env.steps == 3
    env.reset(0)  # target 1; the step counter runs over the env's lifetime
    assert env.step("inc").won and env.steps == 4


def test_counter_failure_actions():
    env = ScriptedEnv.counter()
    env.reset(1)
    with pytest.raises(RuntimeError, match="environment bug"):
        env.step("boom")
    assert env.steps == 1
    release = threading.Event()
    env = partial(ScriptedEnv.counter, release=release)()
    env.reset(1)
    results = []
    worker = threading.Thread(target=lambda: results.append(env.step("hang")))
    worker.start()
    worker.join(0.2)
    assert worker.is_alive() and not results  # blocked on the event
    start = time.perf_counter()
    release.set()
    worker.join(2)
    assert not worker.is_alive() and time.perf_counter() - start < 2
    [result] = results  # a released hang is an action that changes nothing
    assert result.observation.text == "value 0" and not result.done and result.reward == 0.0


def test_hang_without_an_event_waits_the_timeout():
    env = ScriptedEnv(replace(COUNTER, hang_timeout_s=0.1))
    env.reset(0)
    start = time.perf_counter()
    assert not env.step("hang").done and 0.1 <= time.perf_counter() - start < 2


def test_counting():
    env = ScriptedEnv.counting()
    assert (env.name, env.max_turns) == ("counting", 6)
    assert env.task(4) == Task("counting", 4, "count to 4", "len4")
    assert env.reset(2) == Observation("value 0, target 2", ("inc",))
    results = [env.step(a) for a in ("inc", "boom", "inc")]  # no failure actions here: `boom` changes nothing
    assert [r.observation.text for r in results] == ["value 1", "value 1", "value 2"]
    assert [(r.reward, r.done, r.won) for r in results] == [(0.0, False, False)] * 2 + [(1.0, True, True)]
    assert all(r.observation.admissible_actions == () for r in results) and env.steps == 3
    env.reset(0)  # nothing to count: any step wins
    assert env.step("look").won


def test_fake_alfworld():
    env = ScriptedEnv.fake_alfworld()
    assert (env.name, env.max_turns) == ("alfworld", 5)
    assert env.task(7) == Task("alfworld", 7, "count to three.", "pick_and_place")
    actions = ("inc", "look", "help")
    assert env.reset(7) == Observation("You are in a room. Your task is to: count to three.", actions)
    results = _play(env, 7, ["inc", "no tags at all", "look", "help", "inc", "inc"])
    assert [r.observation.text for r in results] == [
        "The counter shows 1.", "Nothing happens.", "The counter shows 1.", "Nothing happens.",
        "The counter shows 2.", "The counter shows 3.",
    ]  # fmt: skip
    assert all(r.observation.admissible_actions == actions for r in results)
    assert [r.done for r in results] == [False] * 5 + [True] and results[-1].won and results[-1].reward == 10.0
    assert sum(r.reward for r in results) == 10.0 and env.steps == 6


def test_fixed_length():
    env = ScriptedEnv.fixed_length()
    assert (env.name, env.max_turns, env.script) == ("fixed", 5, FIXED_LENGTH)
    assert env.task(3) == Task("fixed", 3, "task 3", "type1")
    assert env.reset(2) == Observation("start 2", ("wait",))
    won = [env.step(a) for a in ("anything", "wait", "x")]  # every action counts; task 2 takes 3 steps
    assert [r.observation for r in won] == [Observation(f"{n} left", ("wait",)) for n in (2, 1, 0)]
    assert [(r.reward, r.done, r.won) for r in won] == [(0.0, False, False)] * 2 + [(10.0, True, True)]
    lost = _play(env, 1, ["wait", "wait"])  # odd ids end (after 2 steps) without a win
    assert [(r.reward, r.done, r.won, r.score) for r in lost] == [(0.0, False, False, 0.0), (0.0, True, False, 0.0)]
    assert env.steps == 5


@pytest.mark.parametrize(
    ("preset", "task_id", "turns", "reward"),
    [(ScriptedEnv.counter, 5, 3, 10.0), (ScriptedEnv.counting, 4, 4, 1.0),
     (ScriptedEnv.fake_alfworld, 0, 3, 10.0), (ScriptedEnv.fixed_length, 4, 2, 10.0)],
)  # fmt: skip
def test_the_expert_wins_every_preset(preset, task_id, turns, reward):
    env = preset()
    env.reset(task_id)
    results = []
    while not results or not results[-1].done:
        assert len(results) < env.max_turns
        results.append(env.step(env.expert_action()))
    assert len(results) == turns and results[-1].won and results[-1].score == 1.0
    assert [r.reward for r in results] == [0.0] * (turns - 1) + [reward]


def test_the_tiny_model_builder_is_re_exported():
    assert make_tiny_model_dir is tiny_builder
