"""ALFWorld environment: generated games played on the real alfworld/TextWorld engine, and the real-data adapter."""

from __future__ import annotations

import json
import random
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("alfworld")
pytest.importorskip("textworld")

from trl_sdar.envs.alfworld import (  # noqa: E402
    WIN_REWARD,
    AlfworldEnv,
    feedback_message,
    install_grammar_parse_cache,
    list_real_games,
)
from trl_sdar.envs.alfworld_games import (  # noqa: E402
    EASY,
    TASK_TYPES,
    AlfworldDifficulty,
    game_file_data,
    generate_game,
    task_type_for,
)
from trl_sdar.envs.base import AgentEnv, StepResult  # noqa: E402


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    env = AlfworldEnv(difficulty=EASY, cache_dir=tmp_path_factory.mktemp("alfworld-cache"))
    yield env
    env.close()


def play_expert(env: AlfworldEnv, task_id: int, max_turns: int = 50) -> list[StepResult]:
    obs = env.reset(task_id)
    results = []
    for _ in range(max_turns):
        action = env.expert_action()
        assert action in obs.admissible_actions  # the planner speaks the engine's command language
        result = env.step(action)
        results.append(result)
        obs = result.observation
        if result.done:
            break
    return results


def test_env_follows_protocol(env):
    assert isinstance(env, AgentEnv)
    assert (env.name, env.max_turns, env.invalid_format_penalty, env.action_tag) == ("alfworld", 50, 0.1, "action")


@pytest.mark.parametrize("task_id", range(6))
def test_each_task_type_is_generated_and_solved_by_the_expert(env, task_id):
    task = env.task(task_id)
    assert task.task_type == TASK_TYPES[task_id] == task_type_for(task_id)
    assert task.task_type in task.info["gamefile"] and Path(task.info["gamefile"]).is_file()
    assert task.instruction.endswith(".") and task.info["object_target"] in task.instruction
    results = play_expert(env, task_id)
    assert results[-1].won and results[-1].done and results[-1].reward == WIN_REWARD and results[-1].score == 1.0
    assert all(r.reward == 0.0 and not r.done and not r.won for r in results[:-1])
    assert len(results) <= env.max_turns


@pytest.mark.slow
def test_all_types_solved_at_default_difficulty(tmp_path):
    env = AlfworldEnv(cache_dir=tmp_path)  # bigger rooms, more closed containers and distractors
    for task_id in range(6, 12):
        results = play_expert(env, task_id)
        assert results[-1].won, env.task(task_id)
    env.close()


def test_random_policy_fails_most_tasks_in_a_short_budget(env):
    # Even the easy rooms need a specific 4-9 step sequence; uniform choice over ~10 commands rarely finds it.
    rng = random.Random(0)
    wins = 0
    for task_id in range(6):
        obs = env.reset(task_id)
        for _ in range(10):
            result = env.step(rng.choice(obs.admissible_actions))
            obs = result.observation
            if result.done:
                wins += result.won
                break
    assert wins <= 1


def test_same_id_same_task_and_different_ids_differ(env, tmp_path):
    other = AlfworldEnv(difficulty=EASY, cache_dir=tmp_path)  # fresh instance, fresh cache
    for task_id in (0, 4):
        assert env.task(task_id).instruction == other.task(task_id).instruction
        assert env.reset(task_id) == other.reset(task_id)
        assert env.expert_plan() == other.expert_plan()
    assert generate_game(3, EASY) == generate_game(3, EASY)
    games = [generate_game(i, EASY) for i in range(0, 60, 6)]  # ten pick_and_place tasks
    assert len({g.pddl_problem for g in games}) == 10
    assert len({(g.instruction, g.room, g.receptacles) for g in games}) > 5
    # Splits draw different worlds for the same id.
    assert generate_game(0, EASY, "train").pddl_problem != generate_game(0, EASY, "valid_unseen").pddl_problem
    other.close()


def test_inadmissible_action_is_nothing_happens_and_changes_nothing(env):
    first = env.reset(0)
    look_before = env.step("look").observation
    plan_before = env.expert_plan()
    assert env.expert_action() == plan_before[0]
    for action in ("fly to the moon", "take unicorn 1 from cabinet 7", "go to " + "nowhere 3"):
        result = env.step(action)
        assert result.observation.text == "Nothing happens."
        assert (result.reward, result.done, result.won) == (0.0, False, False)
        assert result.observation.admissible_actions == first.admissible_actions
    assert env.step("look").observation == look_before
    assert env.expert_plan() == plan_before


def test_difficulty_knobs_change_the_world():
    small = AlfworldDifficulty(n_receptacles=6, n_closed=0, n_distractors=0)
    big = AlfworldDifficulty(n_receptacles=20, n_closed=5, n_distractors=10)
    for task_id in range(6):
        a, b = generate_game(task_id, small), generate_game(task_id, big)
        assert (len(a.receptacles), len(b.receptacles)) == (6, 20)
        closed = [sum(r in ("Cabinet", "Drawer", "Safe") for r in g.receptacles) for g in (a, b)]
        assert closed == [0, 5]
        assert len(a.objects) <= 4 <= 10 <= len(b.objects)  # targets (+ lamp) only vs. targets + distractors
    with pytest.raises(ValueError, match="n_closed"):
        AlfworldDifficulty(n_closed=-1)


def test_receptacle_knob_is_visible_through_the_engine(tmp_path):
    counts = {}
    for n in (6, 16):
        env = AlfworldEnv(difficulty=AlfworldDifficulty(n_receptacles=n, n_closed=1), cache_dir=tmp_path)
        obs = env.reset(0)
        counts[n] = sum(a.startswith("go to ") for a in obs.admissible_actions)
        env.close()
    assert counts == {6: 6, 16: 16}


def test_prompt_and_feedback_show_task_observation_actions_and_format(env):
    task = env.task(2)
    first = env.reset(2)
    prompt = env.prompt(task, first)
    assert task.instruction in prompt and first.text in prompt
    assert all(f"- {a}" in prompt for a in first.admissible_actions)
    assert "<think>" in prompt and "<action>" in prompt and "Welcome to TextWorld" not in prompt
    result = env.step(first.admissible_actions[0])
    message = env.feedback(result)
    assert result.observation.text in message and "<action>" in message
    assert all(f"- {a}" in message for a in result.observation.admissible_actions)
    won = StepResult(result.observation, WIN_REWARD, done=True, won=True, score=1.0)
    assert "complete" in feedback_message(won)


def test_reset_restores_sys_argv_and_replays_the_same_start(env):
    argv = list(sys.argv)
    first = env.reset(1)
    env.step(env.expert_action())
    assert env.reset(1) == first
    assert sys.argv == argv  # fast-downward's translator overwrites sys.argv; the env puts it back


def test_envs_in_parallel_threads_each_solve_their_task(tmp_path):
    outcomes: dict[int, bool] = {}

    def worker(task_id: int) -> None:
        env = AlfworldEnv(difficulty=EASY, cache_dir=tmp_path)
        outcomes[task_id] = play_expert(env, task_id)[-1].won
        env.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in (3, 4, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes == {3: True, 4: True, 5: True}


def test_grammar_parse_cache_is_exact():
    from textworld.envs.pddl import textgen

    install_grammar_parse_cache()
    install_grammar_parse_cache()  # idempotent: no cache around the cache
    cached = textgen._parse_and_convert
    raw = cached.__wrapped__
    assert not hasattr(raw, "__wrapped__")
    text = "You arrive at {r.name}. #examineReceptacle.feedback#"
    first, second = cached(text, rule_name="symbols"), cached(text, rule_name="symbols")
    assert repr(first) == repr(second) == repr(raw(text, rule_name="symbols"))
    assert first is not second and first[0] is not second[0]  # derivation mutates symbols: copies handed out


# --- real data adapter -------------------------------------------------------------------------------------------


def make_fake_alfworld_data(root: Path, per_split: int = 2) -> Path:
    """ALFWorld's layout: json_2.1.1/<split>/<type>-<Obj>-None-<Recep>-<scene>/<trial>/game.tw-pddl."""
    for split in ("train", "valid_seen", "valid_unseen"):
        for task_id in range(per_split):
            game = generate_game(task_id, EASY, split)
            folder = f"{game.task_type}-{game.object_target}-None-{game.parent_target or game.toggle_target}-1"
            trial = root / "json_2.1.1" / split / folder / f"trial_T2019{task_id:04d}"
            trial.mkdir(parents=True)
            (trial / "game.tw-pddl").write_text(json.dumps(game_file_data(game)))
    # Variants AlfredTWEnv skips.
    for folder in (
        "pick_and_place_with_movable_recep-Apple-Bowl-Fridge-1",
        "pick_heat_then_place_in_recep-AppleSliced-None-Fridge-1",
    ):
        trial = root / "json_2.1.1" / "train" / folder / "trial_T20190000"
        trial.mkdir(parents=True)
        (trial / "game.tw-pddl").write_text(json.dumps(game_file_data(generate_game(0, EASY))))
    return root


def test_missing_real_data_raises_a_clear_error(tmp_path, monkeypatch):
    missing = tmp_path / "no-alfworld-here"
    with pytest.raises(FileNotFoundError) as err:
        AlfworldEnv(source="real", data_dir=missing)
    message = str(err.value)
    assert str(missing / "json_2.1.1" / "train") in message
    assert "alfworld-download" in message and "ALFWORLD_DATA" in message
    monkeypatch.setenv("ALFWORLD_DATA", str(missing))
    with pytest.raises(FileNotFoundError, match="alfworld-download"):
        AlfworldEnv(source="real", split="valid_unseen")
    with pytest.raises(ValueError, match="split"):
        AlfworldEnv(split="test")


def test_real_adapter_reads_alfworld_layout(tmp_path, monkeypatch):
    root = make_fake_alfworld_data(tmp_path / "alfworld")
    assert len(list_real_games(root, "train")) == 2  # movable / sliced variants left out
    monkeypatch.setenv("ALFWORLD_DATA", str(root))
    env = AlfworldEnv(source="real", split="valid_seen", cache_dir=tmp_path / "unused")
    assert env.num_tasks == 2
    tasks = [env.task(i) for i in range(2)]
    expected = {generate_game(i, EASY, "valid_seen").instruction for i in range(2)}
    assert {t.instruction for t in tasks} == expected
    for task in tasks:
        assert task.task_type in TASK_TYPES and task.task_type in task.info["gamefile"]
        assert task.info["gamefile"].startswith(str(root)) and task.info["source"] == "real"
        results = play_expert(env, task.task_id)
        assert results[-1].won and results[-1].reward == WIN_REWARD
        assert task.instruction in env.prompt(task, env.reset(task.task_id))
    with pytest.raises(IndexError):
        env.task(2)
    assert not (tmp_path / "unused").exists()  # real games are played in place, nothing generated
    env.close()
