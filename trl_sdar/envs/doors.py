"""Doors: a small world made to test SDAR's mechanism on a CPU, where a teacher's context really carries what the
student needs and cannot see.

An episode has one or two rooms. In each, a cue (the symbol on a sign, then the word a voice says) decides which of
a few doors (then chests) is the right one, by a fixed rule of this world: a moon sign means the blue door, and so
on. The right choice leads on, or wins (reward 10); a wrong one ends the episode (reward 0); anything not admissible
changes nothing and costs a turn. Prompts are tens of tokens and there are a few actions, so a step is cheap, and a
policy that knows nothing wins 1 in `options ** rooms` episodes, so most groups of 8 have reward spread.

* `rule="fixed"` (training and evaluation): the cue decides the answer through the world's rule, which the student
  can learn from reward alone.
* `rule="random"`: the answer of each room is drawn per task and the cue says nothing about it. Demonstrations made
  here with the privileged context shown (`trl-sdar sft`, `skills_fraction`) teach the format and to follow the
  context, without teaching the rule.

The privileged context of a task (`Task.info["privileged_context"]`, chosen by `context`):

* `informative`: the task's answers, stated outright ("The right door is the red one. …");
* `noisy`: the same, with each room's answer replaced by a wrong one with probability `noise` (seeded per task), as
  imperfect skill retrieval is;
* `rules`: the world's whole rule table, the way a general skill would state it;
* `none`: nothing.

The expert's rationale (the `<think>` of warm-start demonstrations, `expert_reason`): `plain` names the move and
nothing more; `cue` first restates the room's cue ("The sign shows a moon. The best move now is to …"), so the
word the rule reads stands right before the choice in the model's own text.
"""

from __future__ import annotations

import random

from trl_sdar.envs.base import Observation, StepResult, Task

COLOURS = ("red", "blue", "green", "yellow")
MATERIALS = ("wood", "iron", "brass", "stone")
SYMBOLS = ("moon", "star", "sun", "tree")
WORDS = ("one", "two", "three", "four")


def door_rule(cue: int, options: int) -> int:
    """The rule for doors: symbol `cue` -> colour index (3 options: moon -> blue, star -> green, sun -> red)."""
    return (cue + 1) % options


def chest_rule(cue: int, options: int) -> int:
    """The rule for chests: word `cue` -> material index (3 options: one -> brass, two -> iron, three -> wood)."""
    return options - 1 - cue


HALLS = ("a quiet hall", "a dusty hall", "a long hall", "a bright hall", "a cold hall", "a narrow hall")
RULES = ("fixed", "random")
CONTEXTS = ("informative", "noisy", "rules", "none")
EXPERT_REASONS = ("plain", "cue")
WIN_REWARD = 10.0


def _room(kind: str, cue: int, answer: int, shown: tuple[int, ...]) -> dict:
    names = COLOURS if kind == "door" else MATERIALS
    return {"kind": kind, "cue": cue, "answer": names[answer], "choices": tuple(names[i] for i in shown)}


def rules_text(options: int, rooms: int) -> str:
    """The world's rule table in words (the `rules` context)."""
    doors = "; ".join(f"a {SYMBOLS[c]} sign means the {COLOURS[door_rule(c, options)]} door" for c in range(options))
    text = f"In the halls, the sign picks the door: {doors}."
    if rooms == 2:
        chests = "; ".join(f"'{WORDS[c]}' means the {MATERIALS[chest_rule(c, options)]} chest" for c in range(options))
        text += f" In the rooms, the voice picks the chest: {chests}."
    return text


class DoorsEnv:
    """The doors world (see the module docstring). Deterministic per task id."""

    name = "doors"
    action_tag = "action"
    invalid_format_penalty = 0.1

    def __init__(self, rooms: int = 2, options: int = 3, rule: str = "fixed", context: str = "informative",
                 noise: float = 0.5, max_turns: int = 4, seed: int = 0, expert_reason: str = "plain"):  # fmt: skip
        if rooms not in (1, 2):
            raise ValueError(f"rooms={rooms!r} is not valid; expected 1 or 2.")
        if not 2 <= options <= len(COLOURS):
            raise ValueError(f"options={options!r} is not valid; expected 2 to {len(COLOURS)}.")
        if rule not in RULES:
            raise ValueError(f"rule={rule!r} is not valid; expected one of {list(RULES)}.")
        if context not in CONTEXTS:
            raise ValueError(f"context={context!r} is not valid; expected one of {list(CONTEXTS)}.")
        if expert_reason not in EXPERT_REASONS:
            raise ValueError(f"expert_reason={expert_reason!r} is not valid; expected one of {list(EXPERT_REASONS)}.")
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"noise={noise!r} is not valid; expected a probability in [0, 1].")
        if max_turns < rooms:
            raise ValueError(f"max_turns={max_turns!r} is not valid; expected at least rooms={rooms}.")
        self.rooms, self.options, self.rule, self.context, self.noise = rooms, options, rule, context, noise
        self.max_turns, self.seed, self.expert_reason = max_turns, seed, expert_reason
        self._task: Task | None = None
        self._stage = 0

    # ------------------------------------------------------------------------------------------------ tasks
    def _layout(self, task_id: int) -> tuple[str, list[dict]]:
        rng = random.Random(f"doors/{self.seed}/{task_id}")
        hall = rng.choice(HALLS)
        layout = []
        for kind, rule in (("door", door_rule), ("chest", chest_rule))[: self.rooms]:
            cue = rng.randrange(self.options)
            answer = rule(cue, self.options) if self.rule == "fixed" else rng.randrange(self.options)
            shown = tuple(rng.sample(range(self.options), self.options))  # the order the choices are listed in
            layout.append(_room(kind, cue, answer, shown))
        return hall, layout

    def task(self, task_id: int) -> Task:
        hall, layout = self._layout(task_id)
        goal = "find the treasure: open the right door" + (", then the right chest." if self.rooms == 2 else ".")
        task_type = "+".join(f"{room['kind']}_{room['answer']}" for room in layout)
        info = {"rooms": layout, "hall": hall, "privileged_context": self._context(task_id, layout)}
        return Task(self.name, task_id, goal, task_type, info)

    def _context(self, task_id: int, layout: list[dict]) -> str | None:
        if self.context == "none":
            return None
        if self.context == "rules":
            return rules_text(self.options, self.rooms)
        rng = random.Random(f"doors-noise/{self.seed}/{task_id}")
        said = []
        for room in layout:
            answer = room["answer"]
            if self.context == "noisy" and rng.random() < self.noise:
                answer = rng.choice([c for c in room["choices"] if c != room["answer"]])
            said.append(f"The right {room['kind']} is the {answer} one.")
        return " ".join(said)

    # ------------------------------------------------------------------------------------------------ play
    def reset(self, task_id: int) -> Observation:
        self._task, self._stage = self.task(task_id), 0
        return self._observation()

    def _room_now(self) -> dict:
        return self._task.info["rooms"][self._stage]

    def _observation(self, before: str = "") -> Observation:
        room = self._room_now()
        if room["kind"] == "door":
            text = f"You are in {self._task.info['hall']}. A sign shows a {SYMBOLS[room['cue']]}."
        else:
            text = f"You are in a small room. A voice says: {WORDS[room['cue']]}."
        choices = ", ".join(room["choices"])
        text = f"{before}{text} There are {room['kind']}s: {choices}."
        return Observation(text, tuple(f"open {c} {room['kind']}" for c in room["choices"]))

    def step(self, action: str) -> StepResult:
        if self._task is None:
            raise RuntimeError("step() before reset()")
        room = self._room_now()
        actions = self._observation().admissible_actions
        chosen = " ".join(action.strip().lower().split())
        if chosen not in actions:
            return StepResult(self._observation("Nothing happens. "), 0.0, False)
        if chosen != f"open {room['answer']} {room['kind']}":
            text = f"The {chosen.split()[1]} {room['kind']} was a trap. The game is over."
            return StepResult(Observation(text), 0.0, True)
        self._stage += 1
        if self._stage == self.rooms:
            return StepResult(Observation("You found the treasure!"), WIN_REWARD, True, True, 1.0)
        return StepResult(self._observation("The door opens. "), 0.0, False)

    def prompt(self, task: Task, first: Observation) -> str:
        actions = ", ".join(f"'{a}'" for a in first.admissible_actions)
        return (
            f"Your task: {task.instruction}\n{first.text}\nThe admissible actions: [{actions}].\n"
            "Answer with one action inside <action> </action>."
        )

    def feedback(self, result: StepResult) -> str:
        return result.observation.text

    def expert_action(self) -> str:
        room = self._room_now()
        return f"open {room['answer']} {room['kind']}"

    def expert_rationale(self) -> str:
        """Why the expert plays `expert_action()`, in the words of `expert_reason` (see the module docstring)."""
        room = self._room_now()
        reason = f"The best move now is to {self.expert_action()}."
        if self.expert_reason == "plain":
            return reason
        cue = (
            f"The sign shows a {SYMBOLS[room['cue']]}."
            if room["kind"] == "door"
            else f"The voice says {WORDS[room['cue']]}."
        )
        return f"{cue} {reason}"

    def close(self) -> None:
        self._task = None
