"""The doors world: the rule decides the answer, wrong choices end the episode, the contexts say what they should."""

import collections

import pytest

from trl_sdar.envs.doors import COLOURS, MATERIALS, SYMBOLS, WORDS, DoorsEnv, chest_rule, door_rule, rules_text


def _play(env, task_id, actions):
    env.reset(task_id)
    results = [env.step(a) for a in actions]
    return results


def test_the_rule_picks_the_door_and_the_chest_and_winning_takes_both():
    env = DoorsEnv(rooms=2, options=4)
    for task_id in range(40):
        rooms = env.task(task_id).info["rooms"]
        door, chest = rooms
        assert door["answer"] == COLOURS[door_rule(door["cue"], 4)]
        assert chest["answer"] == MATERIALS[chest_rule(chest["cue"], 4)]
        first = env.reset(task_id)
        assert f"A sign shows a {SYMBOLS[door['cue']]}." in first.text
        assert sorted(first.admissible_actions) == sorted(f"open {c} door" for c in COLOURS)
        middle = env.step(env.expert_action())
        assert not middle.done and middle.reward == 0.0 and f"A voice says: {WORDS[chest['cue']]}." in (
            middle.observation.text)  # fmt: skip
        end = env.step(env.expert_action())
        assert end.done and end.won and end.reward == 10.0 and end.score == 1.0


def test_a_wrong_choice_ends_the_episode_and_an_inadmissible_one_changes_nothing():
    env = DoorsEnv(rooms=1, options=3)
    first = env.reset(5)
    wrong = next(a for a in first.admissible_actions if a != env.expert_action())
    nothing = env.step("dance")
    assert not nothing.done and nothing.reward == 0.0 and nothing.observation.text.startswith("Nothing happens.")
    assert nothing.observation.admissible_actions == first.admissible_actions
    lost = env.step(wrong)
    assert lost.done and not lost.won and lost.reward == 0.0 and "trap" in lost.observation.text


def test_tasks_are_deterministic_and_cover_every_cue():
    a, b = DoorsEnv(), DoorsEnv()
    assert [a.task(i) for i in range(20)] == [b.task(i) for i in range(20)]
    cues = collections.Counter(a.task(i).info["rooms"][0]["cue"] for i in range(300))
    assert set(cues) == {0, 1, 2} and min(cues.values()) > 70  # options=3: each cue about a third of the tasks
    assert DoorsEnv(seed=1).task(0) != a.task(0) or DoorsEnv(seed=1).task(1) != a.task(1)


def test_random_rule_makes_the_cue_say_nothing_about_the_answer():
    env = DoorsEnv(rooms=1, options=3, rule="random")
    pairs = collections.Counter((r["cue"], r["answer"]) for r in (env.task(i).info["rooms"][0] for i in range(900)))
    assert len(pairs) == 9 and min(pairs.values()) > 60  # every cue with every answer
    fixed = DoorsEnv(rooms=1, options=3)
    assert len({(r["cue"], r["answer"]) for r in (fixed.task(i).info["rooms"][0] for i in range(900))}) == 3


def test_contexts_state_the_answers_the_rules_or_a_noisy_version():
    informative = DoorsEnv(context="informative")
    task = informative.task(3)
    door, chest = task.info["rooms"]
    assert task.info["privileged_context"] == (
        f"The right door is the {door['answer']} one. The right chest is the {chest['answer']} one."
    )
    noisy = DoorsEnv(context="noisy", noise=0.5)
    right = 0
    for i in range(400):
        rooms = noisy.task(i).info["rooms"]
        said = noisy.task(i).info["privileged_context"]
        right += sum(f"the {r['answer']} one" in said for r in rooms)
    assert 0.4 < right / 800 < 0.6  # half of the statements wrong, as asked
    assert DoorsEnv(context="noisy", noise=0.0).task(3).info["privileged_context"] == task.info["privileged_context"]
    assert DoorsEnv(context="rules").task(3).info["privileged_context"] == rules_text(3, 2)
    assert "a moon sign means the blue door" in rules_text(3, 2) and "'one' means the brass chest" in rules_text(3, 2)
    for options in (2, 3, 4):  # each rule is a permutation of the choices shown
        assert sorted(door_rule(c, options) for c in range(options)) == list(range(options))
        assert sorted(chest_rule(c, options) for c in range(options)) == list(range(options))
    assert DoorsEnv(context="none").task(3).info["privileged_context"] is None


def test_a_policy_that_knows_nothing_wins_one_in_options_to_the_rooms():
    import random

    env, rng, wins = DoorsEnv(rooms=2, options=3), random.Random(0), 0
    for task_id in range(3000):
        observation = env.reset(task_id)
        while True:
            result = env.step(rng.choice(observation.admissible_actions))
            observation = result.observation
            if result.done:
                wins += result.won
                break
    assert wins / 3000 == pytest.approx(1 / 9, abs=0.02)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"rooms": 3}, "rooms=3 is not valid"), ({"options": 5}, "options=5 is not valid"),
    ({"rule": "learned"}, "rule='learned' is not valid"), ({"context": "all"}, "context='all' is not valid"),
    ({"noise": 1.5}, "noise=1.5 is not valid"), ({"max_turns": 1}, "max_turns=1 is not valid"),
    ({"expert_reason": "long"}, r"expert_reason='long' is not valid; expected one of \['plain', 'cue'\]"),
])  # fmt: skip
def test_bad_settings_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DoorsEnv(**kwargs)


def test_prompts_stay_short():
    env = DoorsEnv()
    task = env.task(0)
    prompt = env.prompt(task, env.reset(0))
    assert len(prompt.split()) < 60 and "<action>" in prompt


@pytest.mark.parametrize("name, rooms", [("doors_builtin_eval128", 2), ("doors1_builtin_eval128", 1)])
def test_the_shipped_evaluation_manifests_name_held_out_doors_tasks(name, rooms):
    from trl_sdar.commands.manifests import load_manifest

    manifest = load_manifest(name)
    assert manifest["env_kwargs"]["rooms"] == rooms
    env = DoorsEnv(**manifest["env_kwargs"])
    assert manifest["env_name"] == "doors" and manifest["task_ids"] == list(range(128))  # training uses >= 128
    wins = 0
    for task_id in manifest["task_ids"]:
        env.reset(task_id)
        while not (result := env.step(env.expert_action())).done:
            pass
        wins += result.won
    assert wins == 128


def test_one_room_tasks_open_the_same_door_room_as_two_room_tasks():
    one, two = DoorsEnv(rooms=1), DoorsEnv(rooms=2)
    for task_id in range(40):
        assert one.task(task_id).info["rooms"] == two.task(task_id).info["rooms"][:1]


def test_the_experts_reason_names_the_move_and_with_cue_first_restates_the_rooms_cue():
    plain, cue = DoorsEnv(rooms=2, expert_reason="plain"), DoorsEnv(rooms=2, expert_reason="cue")
    task = cue.task(5)
    door, chest = task.info["rooms"]
    for env in (plain, cue):
        env.reset(5)
    assert plain.expert_rationale() == f"The best move now is to open {door['answer']} door."
    assert (
        cue.expert_rationale()
        == f"The sign shows a {SYMBOLS[door['cue']]}. The best move now is to open {door['answer']} door."
    )
    cue.step(cue.expert_action())  # into the chest room
    assert (
        cue.expert_rationale()
        == f"The voice says {WORDS[chest['cue']]}. The best move now is to open {chest['answer']} chest."
    )
