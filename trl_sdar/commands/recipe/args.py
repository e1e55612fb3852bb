"""`SDARScriptArguments`: the recipe fields that are neither `SDARConfig` nor TRL's `ModelConfig`.

A recipe (flat YAML, like `trl grpo`'s) mixes the three: `trl-sdar train --config recipe.yaml [--field value …]`.
(The environment is `env_name`: a top-level `env:` mapping in a TRL recipe sets environment variables.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from trl import ScriptArguments

from trl_sdar.agent.parsing import PARSERS
from trl_sdar.agent.rollout import ROLLOUT_UNITS
from trl_sdar.method.turns.advantages import ADVANTAGE_SCOPES
from trl_sdar.skills.reference_rules import SKILLS_RULES

SKILL_MODES = ("rules", "all", "bm25", "embedding", "task", "none")
ENV_SOURCES = ("builtin", "real")
DIFFICULTIES = ("tiny", "easy", "default")  # trl_sdar.envs.alfworld_games.DIFFICULTY_LEVELS


def check_choices(args, choices: dict[str, tuple]) -> None:
    """Raise a one-line ValueError for the first field of `args` whose value is not among its valid choices."""
    for name, valid in choices.items():
        if getattr(args, name) not in valid:
            raise ValueError(f"{name}={getattr(args, name)!r} is not valid; expected one of {list(valid)}.")


def check_at_least(args, lows: dict[str, int]) -> None:
    """Raise a one-line ValueError for the first integer field of `args` below its minimum (None is allowed)."""
    for name, low in lows.items():
        value = getattr(args, name)
        if value is not None and value < low:
            raise ValueError(f"{name}={value!r} is not valid; expected an integer >= {low}.")


def parse_env_options(value: dict | str | None) -> dict | None:
    """`env_options` as a mapping: a YAML mapping as it is, a JSON object given on the command line parsed."""
    if isinstance(value, str):  # `--env_options '{"goals": "human"}'` on the command line
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"env_options={value!r} is not valid; expected a JSON object ({err}).") from None
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"env_options={value!r} is not valid; expected a mapping of argument names.")
    return value


@dataclass
class SDARScriptArguments(ScriptArguments):
    r"""
    Script arguments of `trl-sdar train`.

    Parameters:
        > Parameters that control the environment (multi-turn agent training)

        env_name (`str` or `None`, *optional*, defaults to `"alfworld"`):
            Built-in environment: `"alfworld"`, `"webshop"` or `"search_qa"`. `None` trains on a prompt dataset
            (`dataset_name`) with `reward_funcs`, like `trl grpo`.
        env_source (`str`, *optional*, defaults to `"builtin"`):
            `"builtin"`: the offline generated version. `"real"`: the benchmark's real data (`env_data_dir`).
        env_data_dir (`str` or `None`, *optional*):
            Real data: ALFWorld's data folder (else `ALFWORLD_DATA`), a WebShop checkout, or a JSONL corpus for
            Search-QA.
        env_difficulty (`str`, *optional*, defaults to `"default"`):
            Built-in ALFWorld world size: `"tiny"` (the goal's receptacle, the floor plan's appliances and one
            starting place, 3 object classes, one object each: small-model studies on CPU), `"easy"` (at most 8
            receptacles, 6 object classes, one object each) or `"default"` (the whole ALFRED floor plan, as in the
            real games).
        retriever_url (`str` or `None`, *optional*):
            Search-QA: a retrieval server on loopback (e.g. `http://127.0.0.1:8000/retrieve`).
        questions_path (`str` or `None`, *optional*):
            Search-QA: train on these questions (Search-R1's JSONL or parquet) instead of the generated ones.
        num_train_tasks (`int`, *optional*, defaults to `512`):
            Number of training tasks (task ids `train_task_start …`).
        train_task_start (`int`, *optional*, defaults to `128`):
            First training task id; the evaluation manifests use ids 0–127, so train and eval never overlap.
        env_options (`dict` or `None`, *optional*):
            Further constructor arguments of the environment, e.g. WebShop's `{"goals": "human", "catalog": "full",
            "option_match": "exact", "search": "all_bullets"}` or Search-QA's `{"doc_format": "sdar_json"}` (see
            docs/environments.md); a JSON string on the command line.
        task_order_seed (`int` or `None`, *optional*, defaults to `0`):
            Real data: task id i is the i-th game / goal / question of this seed's permutation of the whole split,
            so the training ids sample every task type and source (`null`: file order, which is sorted by type).
        task_types (`list[str]` or `None`, *optional*):
            Train only on the tasks of these types among the ids above (ALFWorld: e.g. `["pick_and_place_simple"]`;
            WebShop: product categories; Search-QA: question kinds). `None`: every task. A type with no task
            among the ids is an error that lists the types present.
        balance_task_types (`bool`, *optional*, defaults to `False`):
            Order the training tasks round-robin over their task types (each type's tasks in an order drawn from
            `seed`) and turn off TRL's dataset shuffle (`shuffle_dataset`), so every step draws the types in shares
            as equal as its number of tasks allows. Default: TRL's seeded shuffle, under which a step may draw one
            type more often than another.
        max_turns (`int` or `None`, *optional*):
            Turn limit per episode; default the benchmark's (50 / 15 / 4).
        max_turn_tokens (`int`, *optional*, defaults to `512`):
            Tokens per model turn.
        env_step_timeout (`float`, *optional*, defaults to `60.0`):
            Seconds before a hung environment step ends its episode (reward 0).
        env_workers (`int`, *optional*, defaults to `8`):
            Concurrent environment steps.
        subprocess_envs (`bool`, *optional*, defaults to `False`):
            Run each environment in its own process (parallel ALFWorld engines, killable hangs).

        > Parameters that control the agent loop

        rollout_unit (`str`, *optional*, defaults to `"episode"`):
            `"turn"`: every model turn is one training row on a bounded step prompt (the paper's loop; the paper
            recipes use it). `"episode"`: the whole episode is one completion, environment tokens masked.
        history_window (`int` or `None`, *optional*):
            Past (observation, action) pairs shown in a `turn` prompt; `None`: the paper's, 2 for ALFWorld/WebShop
            and 4 for Search-QA.
        parser (`str`, *optional*, defaults to `"reference"`):
            How a turn's text is read: `"reference"` (the paper's rules; a format-invalid turn is penalised and
            still played) or `"strict"` (think first, exactly one action; an invalid turn is not played).
        advantage_over (`str`, *optional*, defaults to `"turns"`):
            `turn` unit: GRPO mean/std over every turn row of a group (`"turns"`, the paper's) or over its
            episodes (`"episodes"`).

        > Parameters that control the skills (privileged context)

        skills (`str`, *optional*, defaults to `"rules"`):
            Skill selection: `"rules"` (the paper's), `"all"`, `"bm25"`, `"embedding"`, `"task"` (the task's own
            context from its environment, e.g. the doors world's `context`), or `"none"` (no teacher context: with
            `sdar_coef > 0` nothing is distilled).
        skills_path (`str` or `None`, *optional*):
            A skill folder in the published format; default: the project's own bank for `env_name`.
        skills_rules (`str`, *optional*, defaults to `"project"`):
            With `skills: rules`, whose rules choose the task skill: `"project"` (this project's), `"reference"` (the
            SDAR code after its 2026-06-22 fix: WebShop and Search-QA re-select at every step from the whole step
            prompt) or `"reference_release"` (the code the paper ran: ALFWorld and WebShop teachers saw the general
            skills only). See `trl_sdar.skills.reference_rules`.
        skills_top_k (`int`, *optional*, defaults to `1`):
            Sections retrieved besides the general skills (`"bm25"` / `"embedding"`).
        student_sees_skills (`bool`, *optional*, defaults to `False`):
            Skill-GRPO baseline: put the skills in the *student's* prompt too (and at evaluation).

        > Parameters that control prompt-dataset training (`env_name: null`)

        reward_funcs (`list[str]` or `None`, *optional*):
            Dotted import paths of reward functions (e.g. `my_lib.rewards.accuracy`).
    """

    dataset_name: str | None = field(default=None, metadata={"help": "Prompt dataset (only with env_name: null)."})
    env_name: str | None = field(
        default="alfworld", metadata={"help": "alfworld | webshop | search_qa | doors | null."}
    )
    env_source: str = field(default="builtin", metadata={"help": "builtin (offline generated) | real (your data)."})
    env_data_dir: str | None = field(default=None, metadata={"help": "Folder/file of the real benchmark data."})
    env_difficulty: str = field(default="default", metadata={"help": "Built-in ALFWorld size: tiny | easy | default."})
    retriever_url: str | None = field(default=None, metadata={"help": "Search-QA retrieval server URL (loopback)."})
    questions_path: str | None = field(default=None, metadata={"help": "Search-QA question file (JSONL/parquet)."})
    num_train_tasks: int = field(default=512, metadata={"help": "Number of training tasks."})
    train_task_start: int = field(default=128, metadata={"help": "First training task id (eval uses 0..127)."})
    env_options: dict | str | None = field(default=None, metadata={"help": "More environment arguments (JSON)."})
    task_order_seed: int | None = field(default=0, metadata={"help": "Real data: seed of the split's permutation."})
    task_types: list[str] | None = field(default=None, metadata={"help": "Train only on tasks of these types."})
    balance_task_types: bool = field(default=False, metadata={"help": "Every step: task types in equal shares."})
    max_turns: int | None = field(default=None, metadata={"help": "Turn limit (default: the benchmark's)."})
    max_turn_tokens: int = field(default=512, metadata={"help": "Max new tokens per model turn."})
    env_step_timeout: float = field(default=60.0, metadata={"help": "Seconds before a hung env step is abandoned."})
    env_workers: int = field(default=8, metadata={"help": "Concurrent environment steps."})
    subprocess_envs: bool = field(default=False, metadata={"help": "One process per environment instance."})
    rollout_unit: str = field(default="episode", metadata={"help": "turn (paper: a row per turn) | episode."})
    history_window: int | None = field(default=None, metadata={"help": "Past (observation, action) pairs per turn."})
    parser: str = field(default="reference", metadata={"help": "reference (paper's rules) | strict."})
    advantage_over: str = field(default="turns", metadata={"help": "turn unit: GRPO stats over turns | episodes."})
    skills: str = field(default="rules", metadata={"help": "rules | all | bm25 | embedding | task | none."})
    skills_path: str | None = field(default=None, metadata={"help": "Published-format skill folder to use."})
    skills_rules: str = field(default="project", metadata={"help": "project | reference | reference_release."})
    skills_top_k: int = field(default=1, metadata={"help": "Retrieved sections for bm25/embedding selection."})
    student_sees_skills: bool = field(default=False, metadata={"help": "Skill-GRPO: skills in the student prompt."})
    reward_funcs: list[str] | None = field(default=None, metadata={"help": "Reward function import paths."})

    def __post_init__(self):
        from trl_sdar.envs import ENV_CLASSES

        if self.env_name in ("", "null", "none", "None"):  # `--env_name null` on the command line, as in YAML
            self.env_name = None
        check_choices(self, {
            "env_source": ENV_SOURCES,
            "env_difficulty": DIFFICULTIES,
            "skills": SKILL_MODES,
            "skills_rules": SKILLS_RULES,
            "rollout_unit": ROLLOUT_UNITS,
            "parser": PARSERS,
            "advantage_over": ADVANTAGE_SCOPES,
        })  # fmt: skip
        self.env_options = parse_env_options(self.env_options)
        if self.env_name is not None and self.env_name not in ENV_CLASSES:
            valid = sorted(ENV_CLASSES)
            raise ValueError(f"env_name={self.env_name!r} is not valid; expected one of {valid} or null.")
        if self.env_name is None and not self.dataset_name:
            raise ValueError("env_name is null, so dataset_name (a prompt dataset) and reward_funcs are required.")
        if self.balance_task_types and self.env_name is None:
            raise ValueError("balance_task_types=true needs an environment's task types; env_name is null.")
        if self.num_train_tasks < 1:
            raise ValueError(f"num_train_tasks={self.num_train_tasks} is not valid; expected >= 1.")
        check_at_least(self, {"train_task_start": 0, "max_turn_tokens": 1, "env_workers": 1, "skills_top_k": 1,
                              "max_turns": 1, "task_order_seed": 0, "history_window": 0})  # fmt: skip
        if not self.env_step_timeout > 0:
            raise ValueError(f"env_step_timeout={self.env_step_timeout!r} is not valid; expected seconds > 0.")
