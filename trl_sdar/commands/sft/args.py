"""`WarmStartArguments`: the fields of `trl-sdar sft` that are neither TRL's `SFTConfig` nor its `ModelConfig`.

A recipe is flat YAML like `trl-sdar train`'s: `trl-sdar sft --config recipe.yaml [--field value …]`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from trl_sdar.agent.parsing import PARSERS
from trl_sdar.agent.rollout import ROLLOUT_UNITS
from trl_sdar.commands.recipe.args import (
    DIFFICULTIES,
    ENV_SOURCES,
    SKILL_MODES,
    check_at_least,
    check_choices,
    parse_env_options,
)
from trl_sdar.commands.sft.demos import SKILLS_LAYOUTS
from trl_sdar.method.config import CONTEXT_PLACEMENTS


@dataclass
class WarmStartArguments:
    r"""
    Script arguments of `trl-sdar sft` (expert demonstrations → supervised warm start).

    Parameters:
        env_name (`str`, *optional*, defaults to `"alfworld"`):
            Built-in environment whose expert is demonstrated: `"alfworld"`, `"webshop"` or `"search_qa"`.
        env_source (`str`, *optional*, defaults to `"builtin"`):
            `"builtin"` (offline generated) or `"real"` (`env_data_dir`).
        env_data_dir (`str` or `None`, *optional*):
            Real benchmark data (see `trl-sdar train`).
        env_difficulty (`str`, *optional*, defaults to `"default"`):
            Built-in ALFWorld world size: `"tiny"`, `"easy"` or `"default"` (see `trl-sdar train`).
        questions_path (`str` or `None`, *optional*):
            Search-QA: demonstrate on these questions (Search-R1's JSONL or parquet).
        env_options (`dict` or `None`, *optional*):
            More arguments of the environment's constructor, as in `trl-sdar train` (e.g. the doors world's
            `{"rule": "random", "context": "informative"}`: demonstrations that teach to follow the context only).
        num_demos (`int`, *optional*, defaults to `64`):
            Expert episodes to train on (tasks the expert does not win are skipped). Fewer demonstrations leave a
            partial agent, and room for RL.
        demo_task_start (`int`, *optional*, defaults to `128`):
            First task id tried (ids `demo_task_start …`); the evaluation manifests use ids 0–127.
        demo_manifest (`str` or `None`, *optional*):
            Try these task ids instead (a JSON manifest file or a shipped manifest name), in order.
        task_types (`list[str]` or `None`, *optional*):
            Demonstrate only tasks of these types (as `task_types` of `trl-sdar train`); the ids tried then run
            16 times further from `demo_task_start` so that rarer types still give `num_demos` episodes.
        demo_search (`bool`, *optional*, defaults to `False`):
            ALFWorld: the demonstrator fetches each object by searching the room (receptacles in the listed order,
            opening closed ones) instead of walking straight to it, which only the game state tells the expert.
            The demonstrations get longer and show a policy the agent can follow from what it sees.
        skills_fraction (`float`, *optional*, defaults to `0.0`):
            Share of the demonstrations whose prompt also shows the privileged skills.
        skills (`str`, *optional*, defaults to `"rules"`):
            How those skills are selected (as in `trl-sdar train`).
        skills_layout (`str`, *optional*, defaults to `"teacher"`):
            `"teacher"`: `teacher_context_header` + skills as raw tokens before the prompt (how the SDAR teacher
            reads them); `"student"`: inside the user message (the Skill-GRPO prompt).
        teacher_context_header (`str`, *optional*, defaults to `"[Privileged Skill Information]\n"`):
            As in `SDARConfig`; use the RL recipe's value.
        teacher_context_placement (`str`, *optional*, defaults to `"prefix"`):
            As in `SDARConfig`: `"prefix"` or `"system"`.
        rollout_unit (`str`, *optional*, defaults to `"turn"`):
            `"turn"`: one example per step on its step prompt; `"episode"`: one multi-turn example per episode,
            environment replies masked.
        history_window (`int`, *optional*, defaults to `2`):
            Past (observation, action) pairs in a `turn` prompt (use the RL recipe's value).
        parser (`str`, *optional*, defaults to `"reference"`):
            How the expert's turns are read back (each must pass it).
        max_turns (`int` or `None`, *optional*):
            Turn limit of a demonstration; default the benchmark's.
        max_turn_tokens (`int`, *optional*, defaults to `512`):
            A completion must fit in it (use the RL recipe's value).
        max_episode_tokens (`int`, *optional*, defaults to `4096`):
            `episode` unit: the transcript budget; longer demonstrations are skipped.
        merge_adapter (`bool`, *optional*, defaults to `True`):
            With LoRA: save the merged full model (loadable by `trl-sdar train` and `trl-sdar eval`), else the
            adapter only (`trl-sdar eval` loads it).
    """

    env_name: str = field(default="alfworld", metadata={"help": "alfworld | webshop | search_qa | doors."})
    env_source: str = field(default="builtin", metadata={"help": "builtin | real."})
    env_data_dir: str | None = field(default=None, metadata={"help": "Real benchmark data."})
    env_difficulty: str = field(default="default", metadata={"help": "Built-in ALFWorld size: tiny | easy | default."})
    questions_path: str | None = field(default=None, metadata={"help": "Search-QA question file."})
    env_options: dict | str | None = field(default=None, metadata={"help": "More environment arguments (JSON)."})
    num_demos: int = field(default=64, metadata={"help": "Expert demonstrations (episodes) to train on."})
    demo_task_start: int = field(default=128, metadata={"help": "First task id tried (eval uses 0..127)."})
    demo_manifest: str | None = field(default=None, metadata={"help": "Task ids to try: manifest file or name."})
    task_types: list[str] | None = field(default=None, metadata={"help": "Demonstrate only these task types."})
    demo_search: bool = field(default=False, metadata={"help": "ALFWorld: demonstrate searching for objects."})
    skills_fraction: float = field(default=0.0, metadata={"help": "Share of demonstrations showing the skills."})
    skills: str = field(default="rules", metadata={"help": "rules | all | bm25 | embedding | task | none."})
    skills_layout: str = field(default="teacher", metadata={"help": "teacher (prefix tokens) | student (prompt)."})
    teacher_context_header: str = field(default="[Privileged Skill Information]\n", metadata={"help": "Header."})
    teacher_context_placement: str = field(default="prefix", metadata={"help": "prefix | system."})
    rollout_unit: str = field(default="turn", metadata={"help": "turn | episode."})
    history_window: int = field(default=2, metadata={"help": "Past (observation, action) pairs per prompt."})
    parser: str = field(default="reference", metadata={"help": "reference | strict."})
    max_turns: int | None = field(default=None, metadata={"help": "Turn limit (default: the benchmark's)."})
    max_turn_tokens: int = field(default=512, metadata={"help": "Tokens a completion may take."})
    max_episode_tokens: int = field(default=4096, metadata={"help": "episode unit: transcript budget."})
    merge_adapter: bool = field(default=True, metadata={"help": "LoRA: save the merged model."})

    def __post_init__(self):
        from trl_sdar.envs import ENV_CLASSES

        check_choices(self, {
            "env_name": tuple(sorted(ENV_CLASSES)),
            "env_source": ENV_SOURCES,
            "env_difficulty": DIFFICULTIES,
            "skills": SKILL_MODES,
            "skills_layout": SKILLS_LAYOUTS,
            "teacher_context_placement": CONTEXT_PLACEMENTS,
            "rollout_unit": ROLLOUT_UNITS,
            "parser": PARSERS,
        })  # fmt: skip
        check_at_least(self, {"num_demos": 1, "demo_task_start": 0, "history_window": 0, "max_turn_tokens": 1,
                              "max_episode_tokens": 1, "max_turns": 1})  # fmt: skip
        if not 0.0 <= self.skills_fraction <= 1.0:
            raise ValueError(f"skills_fraction={self.skills_fraction!r} is not valid; expected 0 <= fraction <= 1.")
        if self.skills_fraction > 0 and self.skills == "none":
            raise ValueError("skills_fraction > 0 needs skills to show: set skills to rules|all|bm25|embedding|task.")
        self.env_options = parse_env_options(self.env_options)


def make_sft_parser():
    from trl import ModelConfig, TrlParser

    from trl_sdar.commands.sft.config import WarmStartSFTConfig

    class RecipeParser(TrlParser):
        def error(self, message: str):
            raise ValueError(message)

        def format_help(self) -> str:
            from trl_sdar.commands.recipe.help import format_recipe_help

            sections = [
                ("trl-sdar sft: the demonstrations", [f.name for f in fields(WarmStartArguments)]),
                ("the model (TRL's ModelConfig)", [f.name for f in fields(ModelConfig)]),
            ]
            epilog = "The other options are TRL's SFTConfig fields (TrainingArguments among them)."
            return format_recipe_help(self, sections, epilog)

    description = "Warm start: supervised fine-tuning on expert demonstrations, from a YAML recipe and overrides."
    return RecipeParser(
        (WarmStartArguments, WarmStartSFTConfig, ModelConfig), prog="trl-sdar sft", description=description
    )


def parse_sft_args(argv: list[str]):
    """(warm-start arguments, SFTConfig, ModelConfig) from `sft` arguments (`--config recipe.yaml` and overrides)."""
    from trl_sdar.commands.recipe.launch import check_recipe_file

    check_recipe_file(argv)
    parser = make_sft_parser()
    warm, training, model, rest = parser.parse_args_and_config(argv, return_remaining_strings=True)
    if rest:
        raise ValueError(f"Unknown sft argument(s) {rest}; see `trl-sdar sft --help`.")
    if training.max_steps == 0 or training.max_steps < -1:
        raise ValueError(f"max_steps={training.max_steps} is not valid; expected -1 (train for num_train_epochs) or "
                         "an integer >= 1.")  # fmt: skip
    if not training.learning_rate >= 0:
        raise ValueError(f"learning_rate={training.learning_rate!r} is not valid; expected a number >= 0.")
    return warm, training, model
