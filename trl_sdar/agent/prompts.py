"""What the agent reads: the per-step prompt of each benchmark, in the paper's information order (pure text).

Every step of the paper's loop shows one user message built from a `StepView`: the task, how many steps were taken,
the last k (observation, action) pairs, the step number with the current observation, and the admissible actions,
followed by the output-format instruction. The first step (or k = 0) shows no history. These are the reference
code's conventions, written in our own words:

* ALFWorld: the first step shows the engine's whole first observation (which states the task); later steps name the
  task separately. History entries read `[Observation i: '…', Action i: '…']`, where the observation is the one the
  action answered. Admissible actions are quoted, one per line, inside `[…]`, without "help".
* WebShop: the page is shown as its `[SEP]`-separated elements after the instruction, each quoted; the admissible
  actions are `'search[<your query>]',` and `'click[…]',` lines inside `[…]`. When a prompt with history grows
  beyond 13,000 characters, the history is left out for that step (as the reference does).
* Search-QA: the question, then (after the first step) the history as `Step i:<search>query</search>` followed by
  that search's `<information>…</information>` block; no admissible-action list.

In `episode` mode the first user message is the first step's prompt and each environment reply shows the new
observation the same way (`reply`), so both units present the same information. Environments without a renderer
here (user-defined ones) use their own `prompt` / `feedback` in `episode` mode and a generic step template in `turn`
mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trl_sdar.envs.base import Observation, Task

WEBSHOP_MAX_PROMPT_CHARS = 13_000

_THINK_THEN_ACT = (
    "Reason step by step about the situation first, and put all of that reasoning inside <think> </think>. Then "
    "pick one of the admissible actions for this step and write it inside <action> </action>."
)
_SHOP_THINK_THEN_ACT = (
    "Reason step by step about the situation first and weigh which admissible action moves the purchase forward "
    "best; put all of that reasoning inside <think> </think>. Then write the chosen admissible action inside "
    "<action> </action>."
)
_SEARCH_INSTRUCTIONS = (
    "Reason first, and put that reasoning inside <think> </think>. Then do exactly one of these two things, not "
    "both:\n"
    "(1) if some knowledge is missing, query the search engine by writing <search> your query </search>;\n"
    "(2) if you can answer with confidence, write only the final answer inside <answer> </answer>, without "
    "explanation, for example <answer>Lisbon</answer>."
)


@dataclass(frozen=True)
class StepView:
    """Everything one step's prompt shows. `history` holds the last k (observation, action) pairs, oldest first;
    `steps_taken` counts every step played before this one (the history may hold fewer)."""

    task: Task
    observation: Observation
    history: tuple[tuple[str, str], ...] = ()
    steps_taken: int = 0

    @property
    def first_history_step(self) -> int:
        return self.steps_taken - len(self.history) + 1


def _quoted_lines(actions: Sequence[str], sep: str, suffix: str = "") -> str:
    return sep.join(f"'{a}'{suffix}" for a in actions)


def _history_pairs(view: StepView) -> str:
    return "\n".join(
        f"[Observation {view.first_history_step + i}: '{obs}', Action {view.first_history_step + i}: '{act}']"
        for i, (obs, act) in enumerate(view.history)
    )


# --- ALFWorld -----------------------------------------------------------------------------------------------------


def alfworld_step(view: StepView) -> str:
    actions = _quoted_lines([a for a in view.observation.admissible_actions if a != "help"], "\n ")
    if view.steps_taken == 0 or not view.history:
        head = (
            "You are an expert agent acting in the ALFRED household environment.\n"
            f"What you observe now: {view.observation.text}\n"
        )
    else:
        head = (
            "You are an expert agent acting in the ALFRED household environment. Your task is to: "
            f"{view.task.instruction}\n"
            f"You have taken {view.steps_taken} step(s) so far. Your last {len(view.history)} observations and the "
            f"actions you took after them: {_history_pairs(view)}\n"
            f"This is step {view.steps_taken + 1}. What you observe now: {view.observation.text}\n"
        )
    return f"\n{head}The admissible actions at this step: [{actions}].\n\nIt is your turn to act.\n{_THINK_THEN_ACT}\n"


# --- WebShop ------------------------------------------------------------------------------------------------------


def webshop_page(text: str, instruction: str) -> str:
    """The page as the reference shows it: the `[SEP]` elements after the instruction, each quoted."""
    parts = text.split(" [SEP] ")
    if instruction in parts:
        return " [SEP] ".join(f"'{p}'" for p in parts[parts.index(instruction) + 1 :])
    return text


def webshop_instruction(task: Task) -> str:
    return task.instruction.strip().rstrip(".")


def webshop_step(view: StepView) -> str:
    instruction = webshop_instruction(view.task)
    page = webshop_page(view.observation.text, instruction)
    actions = _quoted_lines(view.observation.admissible_actions, "\n", ",")
    tail = (
        f"The admissible actions at this step:\n[\n{actions}\n].\n\n"
        f"It is your turn to take one action for this step.\n{_SHOP_THINK_THEN_ACT}\n"
    )
    intro = "You are an expert autonomous agent shopping in the WebShop online store.\n"
    if view.history and view.steps_taken > 0:
        prompt = (
            f"\n{intro}Your task is to: {instruction}.\n"
            f"You have taken {view.steps_taken} step(s) so far. Your last {len(view.history)} observations and the "
            f"actions you took after them: {_history_pairs(view)}\n"
            f"This is step {view.steps_taken + 1}. What you observe now: {page}.\n{tail}"
        )
        if len(prompt) <= WEBSHOP_MAX_PROMPT_CHARS:
            return prompt
    return f"\n{intro}Your task is to: {instruction}.\nWhat you observe now: {page}.\n{tail}"


# --- Search-QA ----------------------------------------------------------------------------------------------------


def information_block(documents: str) -> str:
    """Retrieved documents as the agent sees them."""
    return f"<information>{documents.strip()}</information>"


def search_action_text(action: str) -> str:
    """`search[q]` / `answer[a]` back in the tags the model wrote."""
    for kind in ("search", "answer"):
        if action.startswith(f"{kind}[") and action.endswith("]"):
            return f"<{kind}>{action[len(kind) + 1 : -1]}</{kind}>"
    return action


def search_question(task: Task) -> str:
    return task.instruction.strip()


def search_step(view: StepView) -> str:
    question = search_question(view.task)
    head = f"\nYou are an expert agent who answers the question below step by step.\nYour question: {question}\n"
    if view.history and view.steps_taken > 0:
        steps = "\n".join(
            f"Step {view.first_history_step + i}:{search_action_text(act)} {obs}\n"
            for i, (obs, act) in enumerate(view.history)
        )
        head += (
            f"\nYou have taken {view.steps_taken} step(s) so far. Here is what happened: <search> </search> holds "
            "each query you sent and <information> </information> the results the search engine returned.\n"
            f"History:\n{steps}\n"
        )
    return f"{head}\nIt is your turn to respond for this step.\n{_SEARCH_INSTRUCTIONS}\n"


# --- any other environment ----------------------------------------------------------------------------------------


def generic_step(view: StepView, action_tag: str) -> str:
    lines = [f"Your task: {view.task.instruction}"]
    if view.history:
        lines.append(f"You have taken {view.steps_taken} step(s) so far. Your most recent ones:")
        lines.append(_history_pairs(view))
    lines.append(f"This is step {view.steps_taken + 1}. What you observe now: {view.observation.text}")
    if view.observation.admissible_actions:
        lines.append(
            f"The admissible actions at this step: [{_quoted_lines(view.observation.admissible_actions, ', ')}]."
        )
    lines.append(_SEARCH_INSTRUCTIONS if action_tag == "search_qa" else _THINK_THEN_ACT)
    return "\n".join(lines)


STEP_TEMPLATES = {"alfworld": alfworld_step, "webshop": webshop_step, "search_qa": search_step}


def remembered_observation(env_name: str, observation: Observation, task: Task) -> str:
    """How an observation is written into later steps' history: Search-QA's results inside their
    `<information>` block (empty when nothing was retrieved); WebShop's page as the prompt shows it (the quoted
    elements after the instruction, as the reference's memory stores it); everything else as the environment wrote
    it."""
    if env_name == "search_qa":
        return information_block(observation.text) if observation.text.strip() else ""
    if env_name == "webshop":
        return webshop_page(observation.text, webshop_instruction(task))
    return observation.text


def history_pairs_follow_the_action(env_name: str) -> bool:
    """Search-QA remembers (action, its result); the others (the observation an action answered, the action)."""
    return env_name == "search_qa"


def step_prompt(env_name: str, action_tag: str, view: StepView) -> str:
    """The user message of one step."""
    template = STEP_TEMPLATES.get(env_name)
    return template(view) if template is not None else generic_step(view, action_tag)
