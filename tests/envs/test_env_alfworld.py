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
from trl_sdar.envs.alfworld_expert import parse_goal  # noqa: E402
from trl_sdar.envs.alfworld_floorplans import (  # noqa: E402
    UNSEEN_FLOOR_PLANS,
    layout_receptacle_counts,
    load_floor_plan,
    split_floor_plans,
)
from trl_sdar.envs.alfworld_games import (  # noqa: E402
    DEFAULT,
    EASY,
    REAL_TASK_TYPE_COUNTS,
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
    assert task.task_type == task_type_for(task_id)
    assert {task_type_for(i) for i in range(6)} == set(TASK_TYPES)  # ids 0-5 cover every type
    assert task.task_type in task.info["gamefile"] and Path(task.info["gamefile"]).is_file()
    assert task.instruction.endswith(".") and task.info["object_target"] in task.instruction
    results = play_expert(env, task_id)
    assert results[-1].won and results[-1].done and results[-1].reward == WIN_REWARD and results[-1].score == 1.0
    assert all(r.reward == 0.0 and not r.done and not r.won for r in results[:-1])
    assert len(results) <= env.max_turns


@pytest.mark.slow
def test_all_types_solved_at_default_difficulty(tmp_path):
    env = AlfworldEnv(cache_dir=tmp_path)  # full ALFRED rooms: every receptacle and object class of the plan
    for task_id in range(6):
        results = play_expert(env, task_id)
        assert results[-1].won, env.task(task_id)
    env.close()


def test_expert_recovers_from_a_detour(env):
    # Holding a wrong object and having opened things: the recipe puts it down and still wins.
    task_id = 1  # pick_and_place_simple
    obs = env.reset(task_id)
    target = env.task(task_id).info["object_target"]
    rng = random.Random(3)
    for _ in range(12):
        takes = [a for a in obs.admissible_actions if a.startswith("take ") and target not in a.split(" from ")[0]]
        action = takes[0] if takes else rng.choice([a for a in obs.admissible_actions if not a.startswith("move")])
        obs = env.step(action).observation
        if takes:
            break
    results = []
    for _ in range(30):
        action = env.expert_action()
        assert action in obs.admissible_actions
        results.append(env.step(action))
        obs = results[-1].observation
        if results[-1].done:
            break
    assert results[-1].won


def test_recipe_expert_plans_are_as_short_as_the_planners(tmp_path):
    recipe = AlfworldEnv(difficulty=EASY, cache_dir=tmp_path)
    planner = AlfworldEnv(difficulty=EASY, cache_dir=tmp_path, expert="planner")
    for task_id in range(6):
        recipe.reset(task_id)
        planner.reset(task_id)
        assert len(recipe.expert_plan()) == len(planner.expert_plan()), recipe.task(task_id)
    with pytest.raises(ValueError, match="expert"):
        AlfworldEnv(expert="oracle")
    recipe.close()
    planner.close()


def test_goal_is_parsed_from_the_pddl_of_every_type():
    for task_id in range(6):
        game = generate_game(task_id, EASY)
        goal = parse_goal(game.pddl_problem)
        assert goal.obj_type == game.object_target + "type"
        assert goal.parent_type == (game.parent_target + "type" if game.parent_target else "")
        assert goal.toggle_type == (game.toggle_target + "type" if game.toggle_target else "")
        assert goal.count == (2 if game.task_type == "pick_two_obj_and_place" else 1)
        treatment = {"clean": "clean", "heat": "heat", "cool": "cool"}
        assert goal.treatment == next((v for k, v in treatment.items() if f"_{k}_" in game.task_type), "")
    with pytest.raises(ValueError, match="goal"):
        parse_goal("(define (problem p) (:domain alfred))")


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
    games = [generate_game(i, EASY) for i in range(40) if task_type_for(i) == "pick_and_place_simple"]
    assert len({g.pddl_problem for g in games}) == len(games) >= 8
    assert len({g.floor_plan for g in games}) > 5
    # Splits draw different worlds for the same id.
    assert generate_game(0, EASY, "train").pddl_problem != generate_game(0, EASY, "valid_seen").pddl_problem
    other.close()


def test_task_type_mix_follows_the_real_split():
    for split, counts in REAL_TASK_TYPE_COUNTS.items():
        n = sum(counts)
        drawn = [task_type_for(i, split) for i in range(n)]
        for task_type, count in zip(TASK_TYPES, counts):
            assert abs(drawn.count(task_type) - count) <= 2, (split, task_type)
    # Any window of ids is close to the mix too (not sorted by type).
    window = [task_type_for(i) for i in range(1000, 1128)]
    assert abs(window.count("pick_two_obj_and_place") - 128 * 813 / 3553) <= 3


def test_rooms_are_the_packaged_floor_plans():
    games = [generate_game(i) for i in range(60)]
    for game in games:
        plan = load_floor_plan(game.floor_plan)
        assert sorted(game.receptacles) == sorted(r.cls for r in plan.receptacles)  # full room by default
        assert game.room == plan.room and game.floor_plan not in UNSEEN_FLOOR_PLANS
        assert set(game.objects) - {"DeskLamp", "FloorLamp"} <= set(plan.object_classes)
        target = game.object_target
        n_targets = sum(o.lower() == target for o in game.objects)
        assert n_targets >= (2 if game.task_type == "pick_two_obj_and_place" else 1)
    # Many objects, with look-alikes of the target's class, as in the real games.
    assert sum(len(g.objects) for g in games) / len(games) > 20
    assert sum(sum(o.lower() == g.object_target for o in g.objects) > 1 for g in games) > len(games) // 3
    assert {len(g.receptacles) for g in games} != {10} and max(len(g.receptacles) for g in games) > 30


def test_valid_unseen_uses_only_held_out_floor_plans():
    assert set(split_floor_plans("valid_unseen")) == set(UNSEEN_FLOOR_PLANS)
    assert not set(split_floor_plans("train")) & set(UNSEEN_FLOOR_PLANS)
    assert split_floor_plans("train") == split_floor_plans("valid_seen")
    unseen = {generate_game(i, EASY, "valid_unseen").floor_plan for i in range(40)}
    seen = {generate_game(i, EASY, split).floor_plan for i in range(40) for split in ("train", "valid_seen")}
    assert unseen <= set(UNSEEN_FLOOR_PLANS) and len(unseen) >= 3 and not seen & unseen


def test_floor_plan_receptacles_match_the_layout_files():
    counts = layout_receptacle_counts()
    ranges = {room: (min(c), max(c)) for room, c in counts.items()}
    assert ranges == {"kitchen": (9, 47), "livingroom": (6, 35), "bedroom": (3, 24), "bathroom": (3, 15)}
    kitchen = load_floor_plan(1)
    assert kitchen.count("Cabinet") == 8 and kitchen.count("Drawer") == 8 and kitchen.count("StoveBurner") == 4
    assert {"Fridge", "Microwave", "SinkBasin", "CoffeeMachine", "Toaster"} <= kitchen.receptacle_classes
    assert "Sink" not in kitchen.receptacle_classes  # the basin is the receptacle
    assert {"Apple", "Mug", "Knife"} <= set(kitchen.object_classes) and "AppleSliced" not in kitchen.object_classes
    with pytest.raises(ValueError, match="floor plan"):
        load_floor_plan(99)


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
    small = AlfworldDifficulty(max_receptacles=6, max_repeats=1, max_object_classes=3)
    for task_id in range(6):
        a, b = generate_game(task_id, small), generate_game(task_id, DEFAULT)
        assert len(a.receptacles) <= 6 < len(b.receptacles)
        assert len(a.objects) <= 5 < len(b.objects)  # 3 classes (+1 for pick-two, +lamp) vs the whole room
        assert a.floor_plan == b.floor_plan and a.instruction == b.instruction  # same task, smaller room
    for field, bad in (("max_receptacles", 2), ("max_repeats", 0), ("max_object_classes", 0)):
        with pytest.raises(ValueError, match=field):
            AlfworldDifficulty(**{field: bad})


def test_receptacle_knob_is_visible_through_the_engine(tmp_path):
    counts = {}
    for n in (5, 8):
        env = AlfworldEnv(difficulty=AlfworldDifficulty(max_receptacles=n, max_repeats=1), cache_dir=tmp_path)
        obs = env.reset(1)
        counts[n] = sum(a.startswith("go to ") for a in obs.admissible_actions)
        env.close()
    assert counts == {5: 5, 8: 8}


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


def _write_trial(trial: Path, game, *, solvable: bool | None = True, grammar_put: str | None = None) -> None:
    """One released-game folder: game.tw-pddl (domain, grammar, problem, solvable) and traj_data.json."""
    trial.mkdir(parents=True)
    data = game_file_data(game)
    if solvable is None:
        del data["solvable"]
    else:
        data["solvable"] = solvable
    if grammar_put is not None:  # game files written before ALFWorld 0.4's "put" -> "move" change
        data["grammar"] = data["grammar"].replace('"move {o} to {r}"', json.dumps(grammar_put))
    (trial / "game.tw-pddl").write_text(json.dumps(data))
    params = {
        "object_target": game.object_target.capitalize(),
        "parent_target": game.parent_target.capitalize(),
        "toggle_target": game.toggle_target.capitalize(),
        "mrecep_target": "",
        "object_sliced": False,
    }
    traj = {
        "task_type": game.task_type,
        "task_id": trial.name,
        "pddl_params": params,
        "scene": {"floor_plan": f"FloorPlan{game.floor_plan}", "scene_num": game.floor_plan, "random_seed": 7},
        "turk_annotations": {"anns": [{"task_desc": game.instruction, "high_descs": [], "votes": [1, 1, 1]}]},
    }
    (trial / "traj_data.json").write_text(json.dumps(traj))


def make_fake_alfworld_data(root: Path, per_split: int = 2) -> Path:
    """ALFWorld's layout: json_2.1.1/<split>/<type>-<Obj>-None-<Recep>-<scene>/<trial>/ with two files."""
    for split in ("train", "valid_seen", "valid_unseen"):
        for task_id in range(per_split):
            game = generate_game(task_id, EASY, split)
            folder = f"{game.task_type}-{game.object_target}-None-{game.parent_target or game.toggle_target}-1"
            _write_trial(root / "json_2.1.1" / split / folder / f"trial_T2019{task_id:04d}", game)
    # Folders AlfredTWEnv skips: movable / sliced variants, games marked unsolvable or never checked, no traj_data.
    train = root / "json_2.1.1" / "train"
    game = generate_game(5, EASY)
    _write_trial(train / "pick_and_place_with_movable_recep-Apple-Bowl-Fridge-1" / "trial_T20190000", game)
    _write_trial(train / "pick_heat_then_place_in_recep-AppleSliced-None-Fridge-1" / "trial_T20190000", game)
    _write_trial(train / f"{game.task_type}-Unsolvable-None-X-1" / "trial_T20190000", game, solvable=False)
    _write_trial(train / f"{game.task_type}-Unchecked-None-X-1" / "trial_T20190000", game, solvable=None)
    (train / f"{game.task_type}-Unsolvable-None-X-1" / "trial_T20190001").mkdir()
    no_traj = train / f"{game.task_type}-NoTraj-None-X-1" / "trial_T20190000"
    _write_trial(no_traj, game)
    (no_traj / "traj_data.json").unlink()
    return root


def test_real_loader_keeps_the_games_alfworld_keeps(tmp_path):
    root = make_fake_alfworld_data(tmp_path / "alfworld")
    kept = list_real_games(root, "train")
    assert len(kept) == 2 and all("trial_T2019000" in str(p) for p in kept)
    assert not any(word in str(p) for p in kept for word in ("movable", "Sliced", "Unsolvable", "Unchecked", "NoTraj"))


def test_old_grammar_games_are_played_with_their_own_put_command(tmp_path):
    root = tmp_path / "old"
    game = generate_game(1, EASY, "valid_seen")  # pick_and_place_simple
    _write_trial(root / "json_2.1.1" / "valid_seen" / "pick_and_place_simple-X-None-Y-1" / "t", game,
                 grammar_put="put {o} in/on {r}")  # fmt: skip
    env = AlfworldEnv(source="real", split="valid_seen", data_dir=root)
    obs, commands = env.reset(0), []
    for _ in range(10):
        commands.append(env.expert_action())
        assert commands[-1] in obs.admissible_actions  # the engine speaks the file's grammar, and so does the expert
        result = env.step(commands[-1])
        obs = result.observation
        if result.done:
            break
    assert result.won and commands[-1].startswith("put ") and " in/on " in commands[-1]
    env.close()


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
        assert task.task_type == generate_game(task.task_id, EASY, "valid_seen").task_type  # from traj_data.json
        assert task.info["gamefile"].startswith(str(root)) and task.info["source"] == "real"
        results = play_expert(env, task.task_id)
        assert results[-1].won and results[-1].reward == WIN_REWARD
        assert task.instruction in env.prompt(task, env.reset(task.task_id))
    with pytest.raises(IndexError):
        env.task(2)
    assert not (tmp_path / "unused").exists()  # real games are played in place, nothing generated
    env.close()


def test_named_difficulty_levels(tmp_path):
    from trl_sdar.commands.environments import env_kwargs
    from trl_sdar.commands.recipe.args import DIFFICULTIES
    from trl_sdar.envs.alfworld_games import DIFFICULTY_LEVELS, TINY

    assert tuple(DIFFICULTY_LEVELS) == DIFFICULTIES and DIFFICULTY_LEVELS["easy"] == EASY
    assert env_kwargs("alfworld", difficulty="tiny")["difficulty"] == TINY
    for task_id in range(24):
        tiny, easy = generate_game(task_id, TINY, "train"), generate_game(task_id, EASY, "train")
        assert tiny.instruction == easy.instruction and len(tiny.receptacles) <= len(easy.receptacles)
        # the goal's receptacle, the appliances the floor plan has and one starting place are always kept
        assert len(tiny.receptacles) <= 5 and len(set(tiny.objects)) <= (4 if tiny.toggle_target else 3)  # + a lamp
    env = AlfworldEnv(difficulty=TINY, cache_dir=tmp_path)
    env.reset(1)
    plan = env.expert_plan()
    assert 2 <= len(plan) <= 6 and env.step(plan[0]).done is False  # a short, real game
    for action in plan[1:]:
        result = env.step(action)
    assert result.won
    env.close()
