"""The `turn` unit (the paper's loop): rows, prompts, rewards and advantages of scripted episodes."""

import math

import pytest
from transformers import AutoTokenizer

from trl_sdar.agent.chat import ChatTurns
from trl_sdar.agent.generation import Generated
from trl_sdar.agent.prompts import StepView, alfworld_step, search_step, webshop_step
from trl_sdar.agent.rollout import EnvRollout, RolloutSettings
from trl_sdar.envs.base import Observation, Task
from trl_sdar.method.turns.advantages import padded_row_count, row_multiple, turn_advantages
from trl_sdar.testing import ScriptedEnv


class ByTurnGenerator:
    """Answers the n-th call with `answers[n]` (the same text for every context), as token ids + EOS."""

    def __init__(self, tokenizer, answers):
        self.tokenizer, self.answers, self.contexts = tokenizer, answers, []

    def generate(self, contexts, max_new_tokens):
        self.contexts.append([self.tokenizer.decode(c) for c in contexts])
        text = self.answers[min(len(self.contexts) - 1, len(self.answers) - 1)]
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
        return [Generated(ids[:max_new_tokens], [-0.5] * len(ids[:max_new_tokens])) for _ in contexts]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


INC, LOOK = "<think>count</think><action>inc</action>", "<think>see</think><action>look</action>"


def _play_turns(tokenizer, answers, window=2, task_ids=(0,)):
    settings = RolloutSettings(rollout_unit="turn", history_window=window, max_turn_tokens=40)
    rollout = EnvRollout(ScriptedEnv.fake_alfworld, skills=lambda t: "skills", settings=settings)
    prompts = [row["prompt"] for row in rollout.dataset(list(task_ids))]
    generator = ByTurnGenerator(tokenizer, answers)
    episodes = rollout.run(list(task_ids), prompts, generator, ChatTurns(tokenizer), 40)
    return rollout, episodes, generator


def test_turn_rows_are_one_row_per_model_turn_with_bounded_prompts(tokenizer):
    # turn 1 inc, turn 2 untagged (invalid: its tail is played, "Nothing happens."), 3 look, 4 inc, 5 inc → won
    answers = [INC, "no tags at all", LOOK, INC, INC]
    rollout, [episode], generator = _play_turns(tokenizer, answers)
    assert episode.won and episode.turns == 5 and episode.invalid_turns == 1
    rows = rollout.turn_rows([episode], with_logprobs=True)
    assert len(rows["prompt_ids"]) == 5 and rows["episode_index"] == [0] * 5 and rows["turn_index"] == [0, 1, 2, 3, 4]
    # the episode's reward on every row, minus the penalty only on the invalid turn's row
    assert rows["env_reward"] == pytest.approx([10.0, 9.9, 10.0, 10.0, 10.0])
    assert rows["turn_valid"] == [True, False, True, True, True]
    for ids, mask, lps, text in zip(rows["completion_ids"], rows["env_mask"], rows["logprobs"], answers):
        assert tokenizer.decode(ids) == text + tokenizer.eos_token and mask == [1] * len(ids) and len(lps) == len(ids)
    prompts = [p[0]["content"] for p in rows["prompt"]]
    # step 1: the engine's first observation, no history; later steps: counter, last k = 2 pairs, current obs
    assert "You are in a room" in prompts[0] and "step(s)" not in prompts[0]
    assert "You have taken 3 step(s)" in prompts[3] and "This is step 4." in prompts[3]
    assert "[Observation 2: 'The counter shows 1.', Action 2: 'no tags at all']" in prompts[3]
    assert "[Observation 3: 'Nothing happens.', Action 3: 'look']" in prompts[3]
    assert "Observation 1:" not in prompts[3]  # outside the window
    assert "'inc'\n 'look']" in prompts[3] and "'help'" not in prompts[3]
    # what the model saw is exactly the row's prompt ids
    assert generator.contexts[3][0] == tokenizer.decode(rows["prompt_ids"][3])
    assert rows["prompt_ids"][3] == ChatTurns(tokenizer).prompt_ids(rows["prompt"][3])


def test_history_window_zero_and_strict_parser(tokenizer):
    _, [episode], _ = _play_turns(tokenizer, [INC, INC, INC], window=0)
    assert all("Observation 1" not in r.prompt_text for r in episode.records)
    settings = RolloutSettings(rollout_unit="turn", parser="strict", max_turn_tokens=40)
    rollout = EnvRollout(ScriptedEnv.fake_alfworld, settings=settings)
    prompts = [row["prompt"] for row in rollout.dataset([0])]
    [strict] = rollout.run([0], prompts, ByTurnGenerator(tokenizer, ["no tags", INC]), ChatTurns(tokenizer), 40)
    # strict rules: the invalid turn is not played, the history remembers an empty action
    assert strict.history[0] == ("You are in a room. Your task is to: count to three.", "")
    assert strict.records[1].prompt_text.count("[Observation") == 1


def test_turn_unit_refuses_plain_grpo_call():
    rollout = EnvRollout(ScriptedEnv.fake_alfworld, settings=RolloutSettings(rollout_unit="turn"))
    with pytest.raises(ValueError, match="SDARTrainer"):
        rollout([], trainer=None)


def test_templates_follow_reference_conventions():
    task = Task("webshop", 0, "i need a red mug, and price lower than 20.00 dollars", "home_decor")
    page = "WebShop [SEP] Instruction: [SEP] i need a red mug, and price lower than 20.00 dollars [SEP] Search"
    view = StepView(task, Observation(page, ("search[<your query>]",)))
    text = webshop_step(view)
    assert "'Search'" in text and "'search[<your query>]',\n]" in text and "Instruction:" not in text
    long = StepView(task, Observation(page, ("click[x]",)), (("o" * 7000, "a"), ("p" * 7000, "b")), steps_taken=2)
    assert "Observation 1" not in webshop_step(long)  # over 13,000 characters: history left out, as the reference
    q = Task("search_qa", 0, "Who founded Marrow?", "multi_hop_reasoning")
    hist = (("<information>Doc 1 ...</information>", "<search>Marrow founder</search>"),)
    rendered = search_step(StepView(q, Observation(""), hist, steps_taken=1))
    assert "Step 1:<search>Marrow founder</search> <information>Doc 1 ...</information>" in rendered
    assert "<answer>" in rendered and "Who founded Marrow?" in rendered
    first = alfworld_step(StepView(Task("alfworld", 0, "t", "x"), Observation("obs", ("go to desk 1", "help"))))
    assert "['go to desk 1']" in first and "help" not in first


def test_advantages_over_turn_rows_match_the_reference_formula():
    # group A: episode 1 has 3 rows (scores 10, 10, 9.9), episode 2 has 1 row (0); group B: one episode, one row
    scores, groups, episodes = [10.0, 10.0, 9.9, 0.0, 5.0], ["A", "A", "A", "A", "B"], [1, 1, 1, 2, 3]
    adv = turn_advantages(scores, groups, episodes, over="turns")
    mean = (10 + 10 + 9.9 + 0) / 4
    std = math.sqrt(sum((x - mean) ** 2 for x in [10, 10, 9.9, 0]) / 3)
    expected = [(x - mean) / (std + 1e-6) for x in scores[:4]] + [5.0]  # a single score: mean 0, std 1
    assert adv.tolist() == pytest.approx(expected, rel=1e-6)
    per_episode = turn_advantages(scores, groups, episodes, over="episodes")
    mean2, std2 = 5.0, math.sqrt(((10 - 5) ** 2 + (0 - 5) ** 2) / 1)
    assert per_episode.tolist() == pytest.approx([(x - mean2) / (std2 + 1e-6) for x in scores[:4]] + [5.0])
    assert turn_advantages(scores, groups, episodes, scale="none").tolist() == pytest.approx(
        [x - mean for x in scores[:4]] + [5.0]
    )
    with pytest.raises(ValueError, match="over="):
        turn_advantages(scores, groups, episodes, over="steps")


def test_row_padding_arithmetic():
    assert row_multiple(steps_per_generation=4, num_generations=8, num_processes=2) == 4
    assert row_multiple(steps_per_generation=2, num_generations=4, num_processes=1) == 4
    assert padded_row_count([5, 11], 4) == 12 and padded_row_count([0, 0], 2) == 2


def test_zero_spread_share_counts_rows_of_groups_whose_advantages_are_all_zero():
    from trl_sdar.method.turns.advantages import turn_advantages, zero_spread_share

    # group a: one won episode (2 turns), one lost (2 turns); group b: every row 5; group c: one invalid turn (0.9)
    scores = [10, 10, 0, 0, 5, 5, 5, 1, 0.9, 1, 1]
    groups = ["a"] * 4 + ["b"] * 3 + ["c"] * 4
    episodes = ["e1", "e1", "e2", "e2", "e3", "e3", "e4", "e5", "e5", "e6", "e6"]
    assert zero_spread_share(scores, groups, episodes, over="turns") == 3 / 11  # only b is flat
    # over episodes the first row of each episode counts: c becomes flat (1 and 1)
    assert zero_spread_share(scores, groups, episodes, over="episodes") == 7 / 11
    advantages = turn_advantages(scores, groups, episodes, over="turns")
    for group in "abc":  # over turns, a flat group is one whose advantages are all 0
        rows = [a for a, g in zip(advantages.tolist(), groups, strict=True) if g == group]
        assert all(abs(a) < 1e-6 for a in rows) == (group == "b")
    # nothing to count, and a group of one score (advantage = the score itself) is not flat
    assert zero_spread_share([], [], []) == 0.0 and zero_spread_share([3], ["x"], ["e"]) == 0.0
    with pytest.raises(ValueError, match="differ in length"):
        zero_spread_share([1, 2], ["a"], ["e", "f"])
