"""What the overhead benchmark's arms train on: scripted ALFWorld-like tasks, their prompts and skill contexts, laid
out per `--layout`; and the shape (rows, tokens) of one step.

A layout is a function `(tokenizer, settings) -> Layout` registered in `LAYOUTS`: its dataset, and the `SDARConfig`
fields and trainer arguments it needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TURN_MAX_TOKENS_PER_BACKWARD = 16384  # `turn` layout: bound each forward/backward pass, as the turn-unit recipes do
TASKS = (
    ("pick_and_place_simple", "put a keychain in safe", "keychain 1", "safe 1"),
    ("pick_clean_then_place_in_recep", "put a clean mug in coffeemachine", "mug 1", "coffeemachine 1"),
    ("pick_heat_then_place_in_recep", "heat some egg and put it in garbagecan", "egg 2", "garbagecan 1"),
    ("pick_cool_then_place_in_recep", "cool some apple and put it in countertop", "apple 1", "countertop 2"),
    ("look_at_obj_in_light", "look at bowl under the desklamp", "bowl 3", "desklamp 1"),
    ("pick_two_obj_and_place", "put two cellphone in bed", "cellphone 2", "bed 1"),
)


# ------------------------------------------------------------------------------------------------------ prompts
def admissible_actions(task: tuple[str, str, str, str]) -> list[str]:
    _, _, obj, recep = task
    return [f"go to {r}" for r in ("cabinet 1", "drawer 1", recep)] + [f"take {obj} from countertop 1", "look"]


def observations(task: tuple[str, str, str, str]) -> list[str]:
    """The cycle of observations an ALFWorld episode of `task` shows (the `turn` layout plays them in order)."""
    obj = task[2]
    return [
        "You open the cabinet 1. In it, you see a soapbottle 1.",
        f"You arrive at countertop 1. On the countertop 1, you see a {obj}, a knife 1, a peppershaker 2, and a "
        "spatula 1.",
        "You arrive at drawer 1. The drawer 1 is closed.",
        "You open the drawer 1. The drawer 1 is open. In it, you see a creditcard 2, and a pen 1.",
    ]


def student_prompt(task: tuple[str, str, str, str], step: int) -> str:
    """An ALFWorld turn prompt in the verl-agent style: task, last (observation, action) pair, actions."""
    before, now = observations(task)[:2]
    return (
        "You are an expert agent operating in the ALFRED Embodied Environment. "
        f"Your task is to: {task[1]}.\nPrior to this step, you have already taken {step} step(s). Below is the most "
        "recent observation and the action you took:\n"
        f"[Observation: {before}, Action: go to countertop 1]\n"
        f"You are now at step {step + 1} and your current observation is: {now}\n"
        f"Your admissible actions of the current situation are: [{', '.join(admissible_actions(task))}].\n"
        "Now it's your turn to take an action. You should first reason step-by-step about the current situation "
        "within <think> </think> tags. Once you've finished your reasoning, you should choose an admissible action "
        "for current step and present it within <action> </action> tags."
    )


def skill_context(tokenizer, task_type: str, n_tokens: int) -> str:
    """General + the task's category skills (then the other categories) cut to `n_tokens` tokens of `tokenizer`."""
    from trl_sdar.skills import load_builtin_skills
    from trl_sdar.skills.library import GENERAL_SKILL

    library = load_builtin_skills("alfworld")
    own = library.task_to_skill[task_type]
    order = [GENERAL_SKILL, own] + [s for s in library.skill_names if s != own]
    ids: list[int] = []
    while len(ids) < n_tokens:
        for skill in order:
            ids += tokenizer(library.section(skill) + "\n\n", add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids[:n_tokens])


def length_reward(completions, **kwargs) -> list[float]:
    return [float(len(c[0]["content"]) % 7) for c in completions]


# ------------------------------------------------------------------------------------------------------ layouts
@dataclass
class Layout:
    """What one layout trains on: the dataset, extra `SDARConfig` fields, extra `SDARTrainer` arguments."""

    dataset: Any
    config: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)  # may override `reward_funcs` too


def episode_layout(tokenizer, settings) -> Layout:
    """`episode` layout: one row per prompt (task + history), each with its task type's skill context."""
    from datasets import Dataset

    n_prompts = max(8, settings.steps * settings.batch // settings.num_generations)
    rows = []
    for i in range(n_prompts):
        task = TASKS[i % len(TASKS)]
        rows.append(
            {
                "prompt": [{"role": "user", "content": student_prompt(task, 2 + i % 5)}],
                "privileged_context": skill_context(tokenizer, task[0], settings.context_tokens),
            }
        )
    return Layout(Dataset.from_list(rows))


class ScriptedAlfworld:
    """An ALFWorld-named environment (so the ALFWorld step template renders its turns) that never ends an episode:
    every episode plays the rollout's `max_turns` turns whatever the model writes, so every arm trains on the same
    number of rows. Task `i` is `TASKS[i % len(TASKS)]`; each step shows the next observation of `observations`, and
    an admissible action earns 1.0."""

    name, max_turns, invalid_format_penalty, action_tag = "alfworld", 50, 0.1, "action"

    def __init__(self):
        self._task, self._steps = TASKS[0], 0

    def task(self, task_id: int):
        from trl_sdar.envs.base import Task

        task_type, goal, _, _ = TASKS[task_id % len(TASKS)]
        return Task("alfworld", task_id, f"{goal}.", task_type)

    def reset(self, task_id: int):
        self._task, self._steps = TASKS[task_id % len(TASKS)], 0
        return self._observation(
            "You are in the middle of a room. Looking quickly around you, you see a cabinet 1, a countertop 1, a "
            f"drawer 1, and a {self._task[3]}.\nYour task is to: {self._task[1]}."
        )

    def step(self, action: str):
        from trl_sdar.envs.base import StepResult

        cycle = observations(self._task)
        self._steps += 1
        reward = float(action in admissible_actions(self._task))
        return StepResult(self._observation(cycle[(self._steps - 1) % len(cycle)]), reward, done=False)

    def _observation(self, text: str):
        from trl_sdar.envs.base import Observation

        return Observation(text, tuple(admissible_actions(self._task)))

    def expert_action(self) -> str:
        return admissible_actions(self._task)[-1]

    def close(self) -> None:
        pass


def turn_layout(tokenizer, settings) -> Layout:
    """`turn` layout (the paper's loop): `--turns` rows per episode, each a step prompt (task, last 2 steps, current
    observation), every row of a task's episodes with that task type's skill context."""
    from trl_sdar import EnvRollout, RolloutSettings, env_reward

    rollout_settings = RolloutSettings(
        rollout_unit="turn",
        max_turns=settings.turns,
        max_turn_tokens=settings.max_completion_length,  # the turn budget: min of this and max_completion_length
        history_window=2,
    )
    rollout = EnvRollout(
        ScriptedAlfworld,
        skills=lambda task: skill_context(tokenizer, task.task_type, settings.context_tokens),
        settings=rollout_settings,
    )
    return Layout(
        rollout.dataset(range(len(TASKS))),
        config={"max_tokens_per_backward": TURN_MAX_TOKENS_PER_BACKWARD},
        trainer={"rollout_func": rollout, "reward_funcs": env_reward},
    )


LAYOUTS = {"episode": episode_layout, "turn": turn_layout}


# -------------------------------------------------------------------------------------------------- step shape
def step_shape(batch: dict[str, Any]) -> dict[str, Any]:
    """Rows and tokens of one optimizer step's rollout batch (an SDAR arm's, so its teacher prompts are there)."""
    prompt, completion = batch["prompt_mask"].sum(1), batch["completion_mask"].sum(1)
    teacher = batch["teacher_prompt_mask"].sum(1)
    rows = int(prompt.numel())
    real = int(batch["num_rows_in_batch"]) if "num_rows_in_batch" in batch else rows  # turn rows: + padding rows
    return {
        "rows_per_step": real,
        "padding_rows": rows - real,
        "prompt_tokens_per_step": int(prompt.sum()),
        "completion_tokens_per_step": int(completion.sum()),
        "tokens_per_step": int(prompt.sum() + completion.sum()),
        "teacher_prompt_tokens_per_step": int(teacher.sum()),
        "context_tokens_per_row": (teacher - prompt)[:real].float().mean().item(),
    }


def layout_line(layout: dict[str, Any], s: dict[str, Any]) -> str:
    """The report's `layout` entry in one line of the printed table (`s`: the report's settings)."""
    rows = f"{layout['rows_per_step']} rows per step"
    if layout["name"] == "turn":
        rows += f" ({s['batch']} episodes x {s['turns']} turns)"
    if layout["padding_rows"]:
        rows += f" + {layout['padding_rows']} padding"
    return (
        f"layout {layout['name']}: {rows}; {layout['tokens_per_step']} tokens per step (prompt "
        f"{layout['prompt_tokens_per_step']} + completion {layout['completion_tokens_per_step']}); teacher prompts "
        f"{layout['teacher_prompt_tokens_per_step']} tokens ({layout['context_tokens_per_row']:.0f} context per row)"
    )
