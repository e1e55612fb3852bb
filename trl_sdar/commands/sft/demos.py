"""Expert demonstrations rendered by the rollout itself, so SFT rows are the rows RL trains on.

`render_demonstrations` plays each task through `EnvRollout.run` with an `ExpertGenerator` in place of the model:
the generator answers every step with `<think>rationale</think><action>expert action</action>` (Search-QA:
`<search>…</search>` / `<answer>…</answer>`) followed by the chat template's end-of-turn token. Everything else is the
rollout's own code path: the step prompts (`turn` unit: the same template and history window), the environment's
replies between turns (`episode` unit), the parsing of the expert's text and its effect on the environment. A row's
`input_ids` are therefore exactly the token ids RL would build for that state, and `completion_mask` marks the tokens
a trainer learns: the expert's turns (ending with the end-of-turn token), never the prompt or the environment's
replies.

A demonstration is kept only when the expert won and every turn passed the format check (a completion longer than
`max_turn_tokens` would be cut and fail it). `skills_fraction` of the demonstrations show the privileged skills: in
the teacher's layout (`teacher`: `teacher_context_header` + skills before the prompt ids, as `SDARTrainer`'s teacher
reads them) or in the student's (`student`: the Skill-GRPO prompt). Context tokens are never trained.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from trl_sdar.agent.chat import ChatTurns
from trl_sdar.agent.generation import Generated
from trl_sdar.agent.prompts import search_action_text
from trl_sdar.agent.rollout import EnvRollout, RolloutSettings
from trl_sdar.commands.sft.rationale import (
    alfworld_rationale,
    entity_class,
    parse_alfworld_command,
    search_rationale,
    search_step_rationale,
    webshop_rationale,
)
from trl_sdar.commands.sft.search import search_move
from trl_sdar.envs.base import AgentEnv, Task

SKILLS_LAYOUTS = ("teacher", "student")


@dataclass(frozen=True)
class DemoSettings:
    """How demonstrations are rendered (the agent-loop fields mean what they mean in `RolloutSettings`)."""

    rollout_unit: str = "turn"
    history_window: int = 2
    parser: str = "reference"
    max_turns: int | None = None
    max_turn_tokens: int = 512
    max_episode_tokens: int = 4096  # `episode` unit
    skills_fraction: float = 0.0
    skills_layout: str = "teacher"
    teacher_context_header: str = "[Privileged Skill Information]\n"
    teacher_context_placement: str = "prefix"
    search: bool = False  # ALFWorld: fetch objects by searching the room (`trl_sdar.commands.sft.search`)
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= self.skills_fraction <= 1.0:
            raise ValueError(f"skills_fraction={self.skills_fraction!r} is not valid; expected 0 <= fraction <= 1.")
        if self.skills_layout not in SKILLS_LAYOUTS:
            raise ValueError(f"skills_layout={self.skills_layout!r} is not valid; expected one of {SKILLS_LAYOUTS}.")
        if self.max_episode_tokens < 1:
            raise ValueError(f"max_episode_tokens={self.max_episode_tokens!r} is not valid; expected >= 1.")

    def rollout_settings(self) -> RolloutSettings:
        return RolloutSettings(max_turns=self.max_turns, max_turn_tokens=self.max_turn_tokens, num_workers=1,
                               rollout_unit=self.rollout_unit, history_window=self.history_window,
                               parser=self.parser)  # fmt: skip


@dataclass
class Demonstration:
    """One expert episode as training rows (`turn`: one per step; `episode`: one)."""

    task_id: int
    task_type: str
    with_skills: bool
    rows: list[dict] = field(default_factory=list)  # input_ids, completion_mask, prompt_text, completion_text


class ExpertGenerator:
    """A `Generator` that answers each step of one episode with the environment's expert and a rationale."""

    def __init__(self, env: AgentEnv, tokenizer, end_of_turn_id: int, seed: int, search: bool = False):
        self.env, self.tokenizer, self.end_of_turn_id, self.seed = env, tokenizer, end_of_turn_id, seed
        self.search = search and env.name == "alfworld"
        self.task: Task | None = None

    def start(self, task: Task) -> None:
        self.task, self.step, self.holding, self.searches = task, 0, "", 0
        self.here, self.visited = None, set()  # ALFWorld search: where the agent stands, what it has searched
        goal = re.search(r"(?:in|on|in/on) (\w+)\.?$", task.instruction)  # "put some mug on shelf." → shelf
        self.goal_class = goal.group(1) if goal else ""
        self.texts: list[str] = []

    def generate(self, contexts: list[list[int]], max_new_tokens: int) -> list[Generated]:
        if self.task is None or len(contexts) != 1:
            raise RuntimeError("ExpertGenerator plays one started episode at a time (call start(task) first).")
        text = self.completion_text()
        self.texts.append(text)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.end_of_turn_id]
        return [Generated(ids)]

    def completion_text(self) -> str:
        """The expert's next turn, `<think>…</think>` then the action in the environment's tags."""
        rng = random.Random(f"{self.seed}/{self.task.env_name}/{self.task.task_id}/{self.step}")
        self.step += 1
        if self.env.name == "alfworld":
            plan = self.env.expert_plan() or ["look"]
            move = self._search_move(plan) if self.search else None
            if move is None:
                why, action = alfworld_rationale(self.task, plan, self.holding, rng), plan[0]
            else:
                why, action = search_step_rationale(move, self._wanted(plan), rng, first=not self.visited), move
            verb, obj, where = parse_alfworld_command(action)
            if verb == "take":
                self.holding = obj
                self.visited = set()  # the next object is searched for afresh
            elif verb in ("move", "put"):
                self.holding = ""
            elif verb == "go to":
                self.here = where
                self.visited.add(where)
        elif self.env.name in ("search_qa", "webshop"):
            action = self.env.expert_action()
            explain = search_rationale if self.env.name == "search_qa" else webshop_rationale
            why = explain(self.task, action, self.searches, rng)
            self.searches += action.startswith("search[")
        else:  # any other world: its own reason where it has one (doors), else a plain one that names the move
            action = self.env.expert_action()
            reason = getattr(self.env, "expert_rationale", None)
            why = reason() if reason else f"The best move now is to {action}."
        if self.env.action_tag == "search_qa":
            return f"<think>{why}</think>{search_action_text(action)}"
        return f"<think>{why}</think><action>{action}</action>"

    def _search_move(self, plan: list[str]) -> str | None:
        admissible = self.env.current_observation().admissible_actions
        return search_move(plan, admissible, self.here, self.visited, self.goal_class)

    @staticmethod
    def _wanted(plan: list[str]) -> str:
        """The class of the object the plan fetches next (`take mug 1 from shelf 1` → `mug`)."""
        return entity_class(next(obj for verb, obj, _ in map(parse_alfworld_command, plan) if verb == "take"))


def render_demonstrations(
    env: AgentEnv,
    tokenizer,
    task_ids: Sequence[int],
    num_demos: int,
    settings: DemoSettings,
    skills: Callable[[Task], str] | None = None,
) -> tuple[list[Demonstration], dict[int, str]]:
    """Play tasks of `task_ids` in order with the expert until `num_demos` are kept.

    Returns the demonstrations and, per dropped task id, why it was dropped. Raises when the ids run out first."""
    if settings.skills_fraction > 0 and skills is None:
        raise ValueError("skills_fraction > 0 needs a skill selector (skills: rules|all|bm25|embedding, not none).")
    run = settings.rollout_settings()
    plain = EnvRollout(lambda: env, skills=skills, settings=run)
    student = EnvRollout(lambda: env, skills=skills, settings=run, student_sees_skills=True)
    turns = ChatTurns(tokenizer)
    end_of_turn = turns.end_of_turn_id if turns.end_of_turn_id is not None else tokenizer.eos_token_id
    generator = ExpertGenerator(env, tokenizer, end_of_turn, settings.seed, search=settings.search)
    skilled_count = round(settings.skills_fraction * num_demos)
    with_skills = set(random.Random(settings.seed).sample(range(num_demos), skilled_count))
    context_ids = _ContextIds(tokenizer, settings)
    budget = settings.max_turn_tokens if settings.rollout_unit == "turn" else settings.max_episode_tokens
    demos, dropped = [], {}
    for task_id in task_ids:
        if len(demos) == num_demos:
            break
        skilled = len(demos) in with_skills
        rollout = student if skilled and settings.skills_layout == "student" else plain
        prompt = rollout.dataset([task_id])[0]["prompt"]
        generator.start(env.task(task_id))
        episode = rollout.run([task_id], [prompt], generator, turns, budget)[0]
        reason = _why_not_kept(episode)
        if reason:
            dropped[task_id] = reason
            continue
        context = context_ids(skills(episode.task)) if skilled and rollout is plain else None
        rows = _rows(episode, generator, context, settings.rollout_unit)
        demos.append(Demonstration(task_id, episode.task.task_type, skilled, rows))
    if len(demos) < num_demos:
        raise ValueError(
            f"num_demos={num_demos} but only {len(demos)} expert demonstrations were kept from {len(task_ids)} task "
            f"ids ({len(dropped)} dropped, e.g. {next(iter(dropped.items()), None)}); give more task ids."
        )
    return demos, dropped


def _why_not_kept(episode) -> str:
    if episode.error:
        return f"environment {episode.error}"
    if episode.budget_ended:
        return "the episode ran past max_episode_tokens"
    if episode.invalid_turns or not all(r.valid for r in episode.records):
        return "a turn failed the format check (is max_turn_tokens too small for the rationale?)"
    if not episode.won:
        return f"the expert did not win within {episode.turns} turns (max_turns)"
    return ""


class _ContextIds:
    """Token ids of the skills as the teacher reads them (its own ContextTokenizer), or None."""

    def __init__(self, tokenizer, settings: DemoSettings):
        from trl_sdar.method.teacher import ContextTokenizer, prompt_bos_token_id

        self.encode = ContextTokenizer(
            tokenizer, placement=settings.teacher_context_placement, header=settings.teacher_context_header
        )
        self.bos = prompt_bos_token_id(tokenizer)

    def __call__(self, context: str | None) -> Callable[[list[int]], list[int]] | None:
        ids = self.encode(context)
        if not ids:
            return None
        return lambda prompt: _with_context(prompt, ids, self.bos)


def _with_context(prompt: list[int], context: list[int], bos: int | None) -> list[int]:
    """`context + prompt` exactly as `teacher.build_teacher_prompts` assembles a teacher prompt (no length limit)."""
    import torch

    from trl_sdar.method.teacher import build_teacher_prompts

    built = build_teacher_prompts(torch.tensor([prompt]), torch.ones(1, len(prompt), dtype=torch.long), [context],
                                  pad_token_id=0, bos_token_id=bos)  # fmt: skip
    return built.ids[0].tolist()


def _rows(episode, generator: ExpertGenerator, context, unit: str) -> list[dict]:
    add_context = context or (lambda ids: ids)
    if unit == "turn":  # one row per step
        rows = []
        for record, text in zip(episode.records, generator.texts, strict=True):
            prompt = add_context(record.prompt_ids)
            rows.append({"input_ids": prompt + record.completion_ids,
                         "completion_mask": [0] * len(prompt) + [1] * len(record.completion_ids),
                         "prompt_text": record.prompt_text, "completion_text": text})  # fmt: skip
        return rows
    prompt = add_context(episode.prompt_ids)
    return [{"input_ids": prompt + episode.completion_ids, "completion_mask": [0] * len(prompt) + episode.env_mask,
             "prompt_text": "", "completion_text": "\n".join(generator.texts)}]  # fmt: skip
