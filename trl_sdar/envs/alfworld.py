"""ALFWorld: household tasks played as text on ALFWorld's own engine (TextWorld's PDDL backend + fast-downward).

Games are either generated (`source="builtin"`, see `alfworld_games`) or ALFWorld's released game files
(`source="real"`, found under `data_dir` or `$ALFWORLD_DATA`). Both are loaded exactly as ALFWorld's
`AlfredTWEnv` does: `textworld.start(game.tw-pddl)` wrapped with ALFWorld's name demangler, so observations ("You
arrive at cabinet 1. The cabinet 1 is closed."), admissible commands, "Nothing happens." for inadmissible ones and
the `won` check all come from the engine. The expert follows the task's recipe on the engine's full state
(`alfworld_expert`), or with expert="planner" is the engine's fast-downward planner.

Versions: written for alfworld 0.4.x on textworld 1.7 (pinned in pyproject). ALFWorld 0.4's grammar (2024) spells
the placing command "move X to Y" where earlier game files spell it "put X in/on Y"; every game file carries its
own grammar, and the engine and the expert both use the file's, so either vintage of data plays.
Reward: 10.0 on the step the game is won, else 0 (as in SDAR's runs).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trl_sdar.envs.alfworld_expert import GoalSpec, expert_commands, parse_goal
from trl_sdar.envs.alfworld_games import (
    DEFAULT,
    SPLITS,
    TASK_TYPES,
    AlfworldDifficulty,
    generate_game,
    write_game_file,
)
from trl_sdar.envs.base import Observation, StepResult, Task
from trl_sdar.envs.task_order import order_items

WIN_REWARD = 10.0
EXPERTS = ("recipe", "planner")
REAL_DATA_HELP = (
    "Get ALFWorld's game files with `pip install alfworld && alfworld-download`, then point ALFWORLD_DATA "
    "(or data_dir=) at the folder that contains json_2.1.1/."
)
_BANNER = "-= Welcome to TextWorld, ALFRED! =-"
_FORMAT_HINT = (
    "Reason about what to do inside <think> </think>, then give exactly one command from the list above "
    "inside <action> </action>."
)
_SHORT_HINT = "Think inside <think> </think>, then give one listed command inside <action> </action>."
# The goal sentence sits in the game's grammar as a JSON string ("rhs": "Your task is to: ...").
_GOAL_RE = re.compile(r'Your task is to: ((?:[^"\\]|\\.)*)"')

# The engine is not thread-safe across instances: fast-downward's PDDL translator (run on load/reset) keeps its
# options in module globals, swaps sys.stdout and overwrites sys.argv, and TextWorld's text grammar parses every
# derivation with one module-level parser object. All engine calls therefore hold this lock (the work is pure
# Python, so the GIL would serialise it anyway), and sys.argv is restored after each load.
_ENGINE_LOCK = threading.Lock()


# --- prompts (pure) ----------------------------------------------------------------------------------------------


def clean_observation(text: str) -> str:
    """The engine's text without TextWorld's welcome banner."""
    return text.replace(_BANNER, "").strip()


def format_actions(actions: tuple[str, ...]) -> str:
    return "\n".join(f"- {a}" for a in actions)


def first_prompt(instruction: str, observation: Observation) -> str:
    """First user message: setting, task, what the agent sees, the commands it may use, the output format."""
    return (
        "You are a robot helping out in a home. You act by typing short text commands; the house answers with "
        "what happens.\n"
        f"Your task: {instruction}\n\n"
        f"Where you are now:\n{observation.text}\n\n"
        f"Commands you can use now:\n{format_actions(observation.admissible_actions)}\n\n"
        f"{_FORMAT_HINT}"
    )


def feedback_message(result: StepResult) -> str:
    """Message after an action: what happened, the commands available now, a short format reminder."""
    obs = result.observation
    if result.done:
        return f"{obs.text}\nThe task is complete." if result.won else f"{obs.text}\nThe episode has ended."
    return f"{obs.text}\n\nCommands you can use now:\n{format_actions(obs.admissible_actions)}\n\n{_SHORT_HINT}"


# --- real ALFWorld data ------------------------------------------------------------------------------------------


def real_data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding json_2.1.1/: `data_dir`, else $ALFWORLD_DATA, else alfworld-download's default."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    return Path(os.environ.get("ALFWORLD_DATA", "~/.cache/alfworld")).expanduser()


def list_real_games(root: str | os.PathLike, split: str) -> list[Path]:
    """Sorted game files of a split, kept as ALFWorld's `AlfredTWEnv.collect_game_files` keeps them.

    A game folder counts if it has traj_data.json whose task_type is one of the 6 played types, is not a movable /
    sliced variant, and has a game.tw-pddl carrying `"solvable": true` (ALFWorld marks the games its planner could
    not solve with false and skips them, and skips files without the key).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    split_dir = Path(root) / "json_2.1.1" / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"ALFWorld data folder not found: {split_dir}. {REAL_DATA_HELP}")
    games = [path for path in sorted(split_dir.glob("*/*/game.tw-pddl")) if _playable(path)]
    if not games:
        raise FileNotFoundError(f"No solvable game.tw-pddl files under {split_dir}. {REAL_DATA_HELP}")
    return games


def pin_games(found: list[Path], games: Sequence[str], split: str) -> list[Path]:
    """The playable games named by `games` (paths relative to json_2.1.1/<split>/, with or without the trailing
    game.tw-pddl), in that order. Raises ValueError naming the ones the split does not have."""
    by_name = {game_name(path): path for path in found}
    names = [str(game).strip("/").removesuffix("/game.tw-pddl") for game in games]
    missing = [name for name in names if name not in by_name]
    if missing or not names:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ValueError(f"games: {shown or 'an empty list'} is not among the {len(found)} playable games of "
                         f"split {split!r}; expected folders like '<task_type>-<Object>-…/trial_T…'.")  # fmt: skip
    return [by_name[name] for name in names]


def game_name(path: str | os.PathLike) -> str:
    """A game's name as `games` takes it: '<task folder>/<trial folder>' (its path relative to the split)."""
    path = Path(path)
    return f"{path.parent.parent.name}/{path.parent.name}"


def _playable(path: Path) -> bool:
    folder = path.parent
    if "movable" in str(folder) or "Sliced" in str(folder) or not (folder / "traj_data.json").is_file():
        return False
    if _traj_task_type(folder) not in TASK_TYPES:
        return False
    with open(path) as f:
        return bool(json.load(f).get("solvable", False))


def _traj_task_type(folder: Path) -> str:
    with open(folder / "traj_data.json") as f:
        return json.load(f)["task_type"]


def real_task(path: Path, task_id: int, split: str) -> Task:
    """Describe a released game without starting it: the type from traj_data.json, the goal from its grammar."""
    with open(path) as f:
        grammar = json.load(f)["grammar"]
    match = _GOAL_RE.search(grammar)
    instruction = json.loads(f'"{match.group(1)}"') if match else ""
    info = {"gamefile": str(path), "game": game_name(path), "source": "real", "split": split}
    return Task("alfworld", task_id, instruction, _traj_task_type(path.parent), info)


# --- the environment ---------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    return Path(os.environ.get("TRL_SDAR_CACHE", "~/.cache/trl_sdar")).expanduser() / "alfworld"


class AlfworldEnv:
    """ALFWorld as an `AgentEnv`. One episode at a time; use one instance per thread.

    Args:
        source: "builtin" (generated games, offline) or "real" (ALFWorld's released game files).
        split: "train", "valid_seen" or "valid_unseen" (built-in: valid_seen draws new games on the training floor
            plans, valid_unseen games on the floor plans held out of training, as ALFWorld's splits do).
        data_dir: for source="real", the folder holding json_2.1.1/ (default: $ALFWORLD_DATA).
        task_order_seed: for source="real", which game task id i names: None, the i-th game in sorted path order;
            an integer, the i-th game of that seed's permutation of the whole split (`envs.task_order`).
        games: for source="real", pin the tasks by path: task id i is the i-th of these game folders, given
            relative to json_2.1.1/<split>/ ("pick_two_obj_and_place-Watch-None-Dresser-205/trial_T…"); every one
            must be a playable game of the split. Evaluation manifests use it; overrides task_order_seed.
        difficulty: knobs of the generated worlds (ignored for source="real"); the default is the full floor plan.
        max_turns: default turn limit of the benchmark (the rollout enforces it).
        cache_dir: where generated game files are written (default: $TRL_SDAR_CACHE/alfworld or
            ~/.cache/trl_sdar/alfworld).
        expert: "recipe" (default: the full-knowledge task recipe of `alfworld_expert`, fast in full-size rooms)
            or "planner" (the engine's fast-downward planner; exact shortest plans, but tens of seconds or more
            per plan in rooms with dozens of receptacles).
    """

    name = "alfworld"
    invalid_format_penalty = 0.1
    action_tag = "action"

    def __init__(
        self,
        *,
        source: str = "builtin",
        split: str = "train",
        data_dir: str | os.PathLike | None = None,
        difficulty: AlfworldDifficulty = DEFAULT,
        max_turns: int = 50,
        cache_dir: str | os.PathLike | None = None,
        expert: str = "recipe",
        task_order_seed: int | None = None,
        games: Sequence[str] | None = None,
    ) -> None:
        if source not in ("builtin", "real"):
            raise ValueError(f"source must be 'builtin' or 'real', got {source!r}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if expert not in EXPERTS:
            raise ValueError(f"expert must be one of {EXPERTS}, got {expert!r}")
        self.source, self.split, self.difficulty, self.max_turns = source, split, difficulty, max_turns
        self.expert = expert
        self._goal: GoalSpec | None = None  # goal of the loaded game, read from its PDDL problem
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        if source == "builtin" and (task_order_seed is not None or games is not None):
            raise ValueError("task_order_seed and games apply to source='real' (ALFWorld's released games) only.")
        self._real_games = None
        if source == "real":
            found = list_real_games(real_data_root(data_dir), split)
            pinned = games is not None
            self._real_games = pin_games(found, games, split) if pinned else order_items(found, task_order_seed)
        self._engine: Any = None  # the wrapped TextWorld environment, created on the first reset
        self._loaded: str | None = None  # game file the engine holds
        self._state: Any = None  # last TextWorld GameState

    @property
    def num_tasks(self) -> int | None:
        """Number of real games in the split; None for the built-in generator (any id >= 0 is a task)."""
        return None if self._real_games is None else len(self._real_games)

    def task(self, task_id: int) -> Task:
        if self._real_games is not None:
            if not 0 <= task_id < len(self._real_games):
                raise IndexError(f"task_id {task_id} out of range: split {self.split} has {len(self._real_games)}")
            return real_task(self._real_games[task_id], task_id, self.split)
        game = generate_game(task_id, self.difficulty, self.split)
        path = write_game_file(self.cache_dir, game, self.difficulty)
        info = {
            "gamefile": str(path),
            "source": "builtin",
            "split": self.split,
            "room": game.room,
            "floor_plan": game.floor_plan,
            "object_target": game.object_target,
            "parent_target": game.parent_target,
            "toggle_target": game.toggle_target,
            "difficulty": self.difficulty.key,
        }
        return Task("alfworld", task_id, game.instruction, game.task_type, info)

    def reset(self, task_id: int) -> Observation:
        gamefile = self.task(task_id).info["gamefile"]
        with _ENGINE_LOCK:
            saved_argv = sys.argv
            try:
                if self._engine is None:
                    self._engine = _start_engine(gamefile)
                elif self._loaded != gamefile:
                    self._loaded = None  # a failed load leaves the engine without a game
                    self._engine.load(gamefile)
                self._loaded = gamefile
                self._state = self._engine.reset()
                self._goal = parse_goal(self._engine.unwrapped._game_data["pddl_problem"])
            finally:
                sys.argv = saved_argv
        return self._observation()

    def step(self, action: str) -> StepResult:
        if self._state is None:
            raise RuntimeError("call reset(task_id) before step()")
        with _ENGINE_LOCK:
            self._state, _, _ = self._engine.step(action)
        won = bool(self._state["won"])
        return StepResult(
            observation=self._observation(),
            reward=WIN_REWARD if won else 0.0,
            done=won,
            won=won,
            score=1.0 if won else 0.0,
            info={"gamefile": self._loaded},
        )

    def prompt(self, task: Task, first: Observation) -> str:
        return first_prompt(task.instruction, first)

    def feedback(self, result: StepResult) -> str:
        return feedback_message(result)

    def expert_action(self) -> str:
        """First command of the engine planner's plan from the current state ("look" if it has none)."""
        plan = self.expert_plan()
        return plan[0] if plan else "look"

    def expert_plan(self) -> list[str]:
        """The expert's full command sequence from the current state to a win (empty once won).

        With expert="recipe", a state the recipe does not cover (e.g. objects inside movable receptacles in some
        released games) falls back to the engine planner.
        """
        if self._state is None:
            raise RuntimeError("call reset(task_id) before asking the expert")
        with _ENGINE_LOCK:
            if self.expert == "recipe":
                pddl_env = self._engine.unwrapped
                names = {key: info.name for key, info in pddl_env._entity_infos.items()}
                try:
                    put = pddl_env._logic.actions["putobject"].template
                    facts, won = pddl_env._pddl_state.facts, bool(self._state["won"])
                    return expert_commands(facts, names, self._goal, won, put)
                except (KeyError, IndexError, AssertionError):
                    pass
            return planner_commands(self._engine)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
        self._engine, self._loaded, self._state = None, None, None

    def current_observation(self) -> Observation:
        """What the agent sees now (the last reset's or step's observation), e.g. for a demonstrator."""
        if self._state is None:
            raise RuntimeError("call reset(task_id) before asking for the observation")
        return self._observation()

    def _observation(self) -> Observation:
        # "help" is admissible in the engine but only prints the command list the agent is already shown.
        actions = tuple(a for a in self._state["admissible_commands"] if a != "help")
        return Observation(clean_observation(self._state.feedback), actions)


def _start_engine(gamefile: str) -> Any:
    """Start TextWorld on a game file the way ALFWorld's AlfredTWEnv does (demangled names, e.g. "mug 1")."""
    import textworld
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos

    install_grammar_parse_cache()
    infos = textworld.EnvInfos(won=True, admissible_commands=True, extras=["gamefile"])
    return textworld.start(gamefile, infos, wrappers=[AlfredDemangler(shuffle=False), AlfredInfos])


def install_grammar_parse_cache() -> None:
    """Memoise TextWorld's parse of grammar snippets; the engine's text output stays identical.

    Every observation and every admissible command is produced by `ContextSensitiveGrammar.derive`, which re-parses
    the same few dozen template strings ("#GotoLocation.feedback#", "go to [{r.name | ...}]") with a TatSu parser
    on each call: about half of a step's time. Parsing is a pure function of (text, rule), so a cache that hands
    out deep copies (derivation mutates the symbols) is exact. Idempotent.
    """
    from textworld.envs.pddl import textgen

    if getattr(textgen._parse_and_convert, "_trl_sdar_cached", False):
        return
    raw_parse = textgen._parse_and_convert

    @functools.lru_cache(maxsize=4096)
    def parse_once(text: str, rule_name: str | None) -> Any:
        return raw_parse(text, rule_name=rule_name)

    def cached_parse(text: str, rule_name: str | None = None, **kwargs: Any) -> Any:
        if kwargs.get("trace"):  # debugging path (TW_CSG_TRACE): keep the parser's trace output
            return raw_parse(text, rule_name=rule_name, **kwargs)
        return copy.deepcopy(parse_once(text, rule_name))

    cached_parse._trl_sdar_cached = True
    cached_parse.__wrapped__ = raw_parse
    textgen._parse_and_convert = cached_parse


def planner_commands(engine: Any) -> list[str]:
    """The planner's remaining command sequence from the engine's current state.

    TextWorld computes this only through `EnvInfos(policy_commands=True)`, which replans after *every* step
    (10-30 ms in ALFWorld-sized rooms); calling the same planner on demand keeps ordinary steps cheap. This reaches
    into textworld 1.7's PddlEnv (pinned in pyproject) for the state and entity names it replans with.
    """
    pddl_env = engine.unwrapped
    return list(pddl_env._pddl_state.replan(pddl_env._entity_infos))
