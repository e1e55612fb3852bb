"""The searching ALFWorld demonstrator (`demo_search`): sweeps receptacles in the listed order, opens closed ones,
follows the expert once the object is in view, and still wins."""

import random
import re

import pytest

from trl_sdar.commands.sft.search import fetch_source, search_move

ROOM = ("go to cabinet 1", "go to countertop 1", "go to drawer 1", "go to drawer 2", "go to shelf 1", "look")


def test_fetch_source_reads_the_plans_next_fetch():
    assert fetch_source(["go to shelf 1", "take mug 1 from shelf 1", "go to drawer 1"]) == "shelf 1"
    assert fetch_source(["go to cabinet 1", "open cabinet 1", "take mug 1 from cabinet 1"]) == "cabinet 1"
    assert fetch_source(["take mug 1 from shelf 1", "go to drawer 1"]) == "shelf 1"
    assert fetch_source(["go to drawer 1", "open drawer 1", "move mug 1 to drawer 1"]) is None  # carrying
    assert fetch_source(["go to sinkbasin 1", "clean mug 1 with sinkbasin 1"]) is None


def test_the_sweep_goes_in_listed_order_skipping_the_goal_class_and_the_searched():
    plan = ["go to shelf 1", "take mug 1 from shelf 1", "go to drawer 1", "move mug 1 to drawer 1"]
    # the goal is a drawer, so drawers are never searched; the sweep starts with cabinet 1
    assert search_move(plan, ROOM, None, set(), "drawer") == "go to cabinet 1"
    # at a closed cabinet that is not where the mug is: look inside
    assert search_move(plan, (*ROOM, "open cabinet 1"), "cabinet 1", {"cabinet 1"}, "drawer") == "open cabinet 1"
    # opened and empty: the next place in the list
    after = tuple(a for a in ROOM if a != "go to cabinet 1")
    assert search_move(plan, after, "cabinet 1", {"cabinet 1"}, "drawer") == "go to countertop 1"
    # the sweep's next place is where the expert goes: follow the expert (same command, its rationale)
    assert search_move(plan, ROOM, "countertop 1", {"cabinet 1", "countertop 1"}, "drawer") is None
    # the object in view, or not fetching: the expert's plan
    assert search_move(["take mug 1 from shelf 1"], ROOM, "shelf 1", set(), "drawer") is None
    assert search_move(plan[2:], ROOM, "shelf 1", set(), "drawer") is None
    # nothing left to search (e.g. the object sits in a goal-class receptacle): the expert knows
    assert search_move(["go to drawer 2", "take mug 1 from drawer 2"], ROOM, None,
                       {"cabinet 1", "countertop 1", "shelf 1"}, "drawer") is None  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _actions(demo):
    return [re.search(r"<action>(.*)</action>", row["completion_text"]).group(1) for row in demo.rows]


def test_search_demonstrations_sweep_the_room_then_win(tokenizer, tmp_path):
    from trl_sdar.commands.sft import DemoSettings, render_demonstrations
    from trl_sdar.envs.alfworld import AlfworldEnv
    from trl_sdar.envs.alfworld_games import EASY, task_type_for

    env = AlfworldEnv(difficulty=EASY, cache_dir=tmp_path)
    ids = [i for i in range(128, 200) if task_type_for(i) == "pick_and_place_simple"][:3]
    plain, _ = render_demonstrations(env, tokenizer, ids, 3, DemoSettings(max_turn_tokens=128))
    search, dropped = render_demonstrations(env, tokenizer, ids, 3, DemoSettings(max_turn_tokens=128, search=True))
    assert not dropped  # every search demonstration is still won (kept only when won)
    longer = 0
    for expert, searched, task_id in zip(plain, search, ids, strict=True):
        a, b = _actions(expert), _actions(searched)
        task = env.task(task_id)
        goal_class = task.instruction.rstrip(".").split()[-1]
        take = next(i for i, c in enumerate(b) if c.startswith("take "))
        visits = [c[len("go to ") :] for c in b[:take] if c.startswith("go to ")]
        assert visits == sorted(visits) and len(set(visits)) == len(visits)  # one sweep, in the listed order
        assert not any(v.rsplit(" ", 1)[0] == goal_class for v in visits)
        assert b[take:] == a[a.index(next(c for c in a if c.startswith("take "))) :]  # then the expert's plan
        assert len(b) >= len(a)
        longer += len(b) > len(a)
        wanted = b[take].split()[1]
        for row, command in zip(searched.rows[:take], b[:take], strict=True):
            if command not in a:  # a search step: its rationale names the object being looked for
                assert wanted in row["completion_text"].split("</think>")[0]
    assert longer >= 1  # at least one of the three objects was not in the sweep's first place


def test_search_rationale_is_seeded(tokenizer):
    from trl_sdar.commands.sft.rationale import search_step_rationale

    texts = {search_step_rationale("go to shelf 1", "mug", random.Random(s)) for s in range(8)}
    assert len(texts) == 2 and all("mug" in t and "shelf 1" in t for t in texts)
    assert "open" in search_step_rationale("open cabinet 1", "mug", random.Random(0)).lower()
    first = {search_step_rationale("go to shelf 1", "mug", random.Random(s), first=True) for s in range(8)}
    assert first.isdisjoint(texts) and all("mug" in t and "shelf 1" in t for t in first)


def test_demo_search_reaches_the_demonstrator(tokenizer, monkeypatch):
    from trl_sdar.commands.sft import parse_sft_args, run

    seen = {}
    monkeypatch.setattr(run, "render_demonstrations", lambda env, tok, ids, n, settings, skills: seen.update(
        search=settings.search) or ([], {}))  # fmt: skip
    for flag, expected in (("true", True), ("false", False)):
        warm, _, _ = parse_sft_args(["--env_name", "search_qa", "--demo_search", flag, "--output_dir", "x",
                                     "--use_cpu", "true", "--bf16", "false"])  # fmt: skip
        run.build_demonstrations(warm, tokenizer, seed=0)
        assert seen["search"] is expected
