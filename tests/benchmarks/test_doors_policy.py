"""benchmarks/doors_policy.py: the summary on hand-computed choice tables, and the shared-prefix answer scores against
a plain forward pass of the tiny model."""

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl.trainer.utils import add_fused_lm_head

from trl_sdar.envs.doors import SYMBOLS, DoorsEnv

COLOURS = ("red", "blue", "green")


@pytest.fixture(scope="module")
def doors_policy(load_benchmark):
    return load_benchmark("doors_policy")


def test_a_choice_that_ignores_the_sign_carries_no_rule_information(doors_policy):
    choice = torch.tensor([[0.2, 0.5, 0.3]] * 6)
    cues, right = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([1, 2, 0, 1, 2, 0])
    report = doors_policy.summarise(choice, cues, right, coverage=0.9, colours=COLOURS)
    assert report["rule_information_nats"] == pytest.approx(0.0, abs=1e-7)
    assert report["prior"] == pytest.approx({"red": 0.2, "blue": 0.5, "green": 0.3})
    assert report["expected_success"] == pytest.approx((0.5 + 0.3 + 0.2) / 3)  # P(right) per task, averaged
    assert report["tasks"] == 6 and report["coverage"] == 0.9


def test_a_choice_that_follows_the_sign_carries_ln3_nats_and_wins_every_task(doors_policy):
    cues = torch.tensor([0, 1, 2, 2])
    right = torch.tensor([2, 0, 1, 1])  # a made-up rule: sign s -> colour (s + 2) % 3
    choice = torch.nn.functional.one_hot(right, 3).float()
    report = doors_policy.summarise(choice, cues, right, coverage=1.0, colours=COLOURS)
    weights = torch.tensor([0.25, 0.25, 0.5])  # the sign's frequencies; the colours take the same ones
    assert report["rule_information_nats"] == pytest.approx(float(-(weights * weights.log()).sum()), rel=1e-6)
    assert report["expected_success"] == 1.0
    assert report["choice_given_sign"]["moon"] == {"red": 0.0, "blue": 0.0, "green": 1.0}
    assert set(report["choice_given_sign"]) == {"moon", "star", "sun"}


def test_half_informed_choices_fall_between(doors_policy):
    cues = torch.tensor([0, 1, 2])
    right = torch.tensor([0, 1, 2])
    choice = 0.5 * torch.eye(3) + 0.5 / 3  # half the time the rule, half the time uniform
    report = doors_policy.summarise(choice, cues, right, coverage=1.0, colours=COLOURS)
    p = 0.5 + 0.5 / 3
    expected = math.log(3) + p * math.log(p) + 2 * (0.5 / 3) * math.log(0.5 / 3)  # ln 3 - H(row)
    assert report["rule_information_nats"] == pytest.approx(expected, rel=1e-6)
    assert report["expected_success"] == pytest.approx(p)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _plain_logprob(model, prompt: list[int], answer: list[int]) -> float:
    ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    taken = logps.gather(-1, ids[0, 1:, None])[:, 0]
    return float(taken[len(prompt) - 1 :].sum())


def test_shared_prefix_answer_scores_equal_a_plain_forward_pass(doors_policy, tiny):
    model, tokenizer = tiny
    fused = AutoModelForCausalLM.from_pretrained(model.name_or_path).eval()
    add_fused_lm_head(fused, temperature=1.0)
    header = tokenizer("You are in a hall with doors.", add_special_tokens=False)["input_ids"] * 3
    prompts = [header + tokenizer(f" The sign shows a {s}.", add_special_tokens=False)["input_ids"]
               for s in ("moon", "star", "sun and a tree")]  # fmt: skip
    env = DoorsEnv(rooms=1, expert_reason="cue")
    answers = []
    for task_id in range(len(prompts)):
        env.reset(task_id)
        answers.append(doors_policy.answer_texts(env, env.task(task_id)))
    scores = doors_policy.answer_logprobs(fused, tokenizer, prompts, answers, batch_size=4)
    assert scores.shape == (3, 3)
    for i, prompt in enumerate(prompts):
        for j, answer in enumerate(answers[i]):
            encoded = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            assert float(scores[i, j]) == pytest.approx(_plain_logprob(model, prompt, encoded), abs=1e-3)


@pytest.mark.parametrize("reason", ["plain", "cue"])
def test_the_answers_are_the_experts_turn_with_each_colour(doors_policy, reason):
    env = DoorsEnv(rooms=1, options=3, expert_reason=reason)
    for task_id in range(4):
        room = env.task(task_id).info["rooms"][0]
        env.reset(task_id)
        answers = doors_policy.answer_texts(env, env.task(task_id))
        assert len(answers) == 3
        for colour, text in zip(COLOURS, answers, strict=True):
            assert text.endswith(f"<action>open {colour} door</action>") and f"to open {colour} door.</think>" in text
            assert text.startswith(f"<think>The sign shows a {SYMBOLS[room['cue']]}. ") == (reason == "cue")
        assert (
            answers[COLOURS.index(room["answer"])]
            == f"<think>{env.expert_rationale()}</think><action>{env.expert_action()}</action>"
        )


def test_read_policy_reads_every_task_of_a_one_room_world(doors_policy, tiny):
    model, tokenizer = tiny
    add_fused_lm_head(model, temperature=1.0)
    report = doors_policy.read_policy(model, tokenizer, DoorsEnv(rooms=1, options=3), list(range(6)), batch_size=5)
    assert report["tasks"] == 6 and 0 <= report["coverage"] < 1  # a random model: ~0 mass on the template
    assert sum(report["prior"].values()) == pytest.approx(1.0)
    for row in report["choice_given_sign"].values():
        assert sum(row.values()) == pytest.approx(1.0)
    assert 0 <= report["expected_success"] <= 1 and report["rule_information_nats"] >= -1e-7
    with pytest.raises(ValueError, match="rooms=2 is not valid"):
        doors_policy.read_policy(model, tokenizer, DoorsEnv(rooms=2, options=3), [0])


def test_main_reports_each_model_of_the_one_room_manifest(doors_policy, tiny_model_dir, tmp_path):
    out = tmp_path / "probe.json"
    report = doors_policy.main(["--models", tiny_model_dir, "--output", str(out)])
    written = json.loads(out.read_text())
    assert written["manifest"] == "doors1_builtin_eval128" and written["models"][tiny_model_dir]["tasks"] == 128
    assert written["models"] == json.loads(json.dumps(report["models"]))
    assert written["seconds"][tiny_model_dir] > 0
    with pytest.raises(ValueError, match="rooms=2 is not valid"):
        doors_policy.main(["--models", tiny_model_dir, "--manifest", "doors_builtin_eval128"])
