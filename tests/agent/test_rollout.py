"""EnvRollout on a scripted environment and a scripted generator: tokens, masks, rewards, failures."""

import functools
import threading
import time
from types import SimpleNamespace

import pytest
from transformers import AutoTokenizer

from trl_sdar.agent.generation import Generated, VLLMGenerator
from trl_sdar.agent.rollout import INVALID_FORMAT_FEEDBACK, ChatTurns, EnvRollout, RolloutSettings, env_reward
from trl_sdar.testing import ScriptedEnv


class ScriptedGenerator:
    """Plays fixed texts per episode index (cycling), tokenised here as a model would emit them (+ EOS)."""

    def __init__(self, tokenizer, scripts, eos=True):
        self.tokenizer, self.scripts, self.eos, self.calls = tokenizer, scripts, eos, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def generate(self, contexts, max_new_tokens):
        self.calls.append((len(contexts), max_new_tokens))
        out = []
        for context in contexts:
            script = next(s for prefix, s in self.scripts if _starts(context, prefix))
            turn = sum(1 for _ in self.calls) - 1
            ids = self.tokenizer(script[min(turn, len(script) - 1)], add_special_tokens=False)["input_ids"]
            ids = ids + [self.tokenizer.eos_token_id] if self.eos else ids
            out.append(Generated(ids[:max_new_tokens]))
        return out


def _starts(context, prefix):
    return context[: len(prefix)] == prefix


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


STRICT = RolloutSettings(parser="strict")


def _play(tokenizer, task_ids, texts_per_task, budget=4000, settings=STRICT, env_factory=ScriptedEnv.counter):
    rollout = EnvRollout(env_factory, skills=lambda t: f"skills for {t.task_type}", settings=settings)
    dataset = rollout.dataset(task_ids)
    prompts = [row["prompt"] for row in dataset]
    turns = ChatTurns(tokenizer)
    scripts = [(turns.prompt_ids(p), texts_per_task[tid]) for p, tid in zip(prompts, task_ids, strict=True)]
    generator = ScriptedGenerator(tokenizer, scripts)
    episodes = rollout.run(task_ids, prompts, generator, turns, budget)
    return rollout, episodes, generator


INC = "<think>count</think><action>inc</action>"


def test_episode_tokens_are_the_chat_transcript_and_mask_marks_env_tokens(tokenizer):
    rollout, [episode], _ = _play(tokenizer, [1], {1: [INC, "<action>inc</action>", INC]})
    # task 1: target 2 → turn 1 inc (value 1), turn 2 invalid (no think), turn 3 inc (value 2, won)
    assert episode.won and episode.turns == 3 and episode.invalid_turns == 1
    assert episode.reward(0.1) == pytest.approx(10.0 - 0.1)
    messages = [
        {"role": "user", "content": "count to 2. value 0, target 2"},
        {"role": "assistant", "content": INC},
        {"role": "user", "content": "value 1"},
        {"role": "assistant", "content": "<action>inc</action>"},
        {"role": "user", "content": f"{INVALID_FORMAT_FEEDBACK} (missing <think>…</think>)"},
        {"role": "assistant", "content": INC},
    ]  # fmt: skip
    transcript = tokenizer.apply_chat_template(messages, tokenize=False)
    decoded = tokenizer.decode(episode.prompt_ids + episode.completion_ids)
    assert transcript.startswith(decoded) and transcript[len(decoded) :] == "\n"  # ends at the model's EOS
    model_tokens = [t for t, m in zip(episode.completion_ids, episode.env_mask, strict=True) if m]
    expected_model = sum((tokenizer(m["content"])["input_ids"] + [tokenizer.eos_token_id] for m in messages[1::2]), [])
    assert model_tokens == expected_model  # exactly the generated ids carry mask 1
    env_text = tokenizer.decode([t for t, m in zip(episode.completion_ids, episode.env_mask, strict=True) if not m])
    assert "value 1" in env_text and "<think>count" not in env_text


def test_groups_share_a_task_and_rewards_follow_the_rules(tokenizer):
    rollout, episodes, generator = _play(tokenizer, [0, 0, 2, 2], {0: [INC], 2: ["no tags", "no tags"]})
    assert [e.task.task_id for e in episodes] == [0, 0, 2, 2]
    assert [e.won for e in episodes] == [True, True, False, False]
    assert [e.turns for e in episodes] == [1, 1, 6, 6]  # max_turns of the env
    out = rollout.to_rollout_output(episodes, with_logprobs=False)
    assert out["env_reward"] == pytest.approx([10.0, 10.0, -0.6, -0.6])
    assert out["privileged_context"] == ["skills for type0"] * 2 + ["skills for type0"] * 2
    assert env_reward(None, out["env_reward"]) == out["env_reward"]
    assert generator.calls[0][0] == 4 and generator.calls[1][0] == 2  # batched; finished episodes drop out
    metrics = rollout.metrics(episodes)
    assert metrics["env/counter/success"] == 0.5 and metrics["env/counter/success/type0"] == 0.5
    assert metrics["env/counter/invalid_rate"] == pytest.approx(12 / 14)
    assert all(len(m) == len(c) for m, c in zip(out["env_mask"], out["completion_ids"], strict=True))


def test_episode_token_budget_is_respected(tokenizer):
    _, [episode], _ = _play(tokenizer, [2], {2: ["<think>" + "x" * 300 + "</think><action>noop</action>"]}, budget=60)
    assert len(episode.completion_ids) <= 60 and episode.done and not episode.won


def test_environment_exception_ends_only_that_episode(tokenizer):
    _, episodes, _ = _play(tokenizer, [0, 1], {0: ["<think>x</think><action>boom</action>"], 1: [INC, INC]})
    assert episodes[0].error == "exception" and episodes[0].reward(0.1) == 0.0
    assert episodes[1].won and episodes[1].error == ""


def test_hung_environment_times_out_and_is_replaced(tokenizer):
    release = threading.Event()
    settings = RolloutSettings(step_timeout_s=0.3, parser="strict")
    start = time.perf_counter()
    rollout, episodes, _ = _play(
        tokenizer, [0, 1], {0: ["<think>x</think><action>hang</action>"], 1: [INC, INC]}, settings=settings,
        env_factory=functools.partial(ScriptedEnv.counter, release=release),
    )  # fmt: skip
    release.set()
    assert time.perf_counter() - start < 3
    assert episodes[0].error == "timeout" and episodes[1].won
    assert all(env is not episodes[0].env for env in rollout._envs)
    assert rollout.metrics(episodes)["env/counter/env_timeouts"] == 1.0


def test_unknown_prompt_is_a_clear_error():
    rollout = EnvRollout(ScriptedEnv.counter)
    with pytest.raises(KeyError, match="EnvRollout.dataset"):
        rollout.task_id_of([{"role": "user", "content": "not a task"}])


def test_vllm_generator_uses_turn_budget_and_returns_sampled_logprobs():
    calls = []

    class FakeVLLM:
        max_completion_length = 512

        def generate(self, prompts, images, num_generations):
            calls.append((prompts, self.max_completion_length, num_generations))
            return prompts, [[5, 6]] * len(prompts), [[[-0.5, -2.0], [-0.25]]] * len(prompts), None

    fake = FakeVLLM()
    out = VLLMGenerator(SimpleNamespace(args=SimpleNamespace(vllm_mode="colocate"), vllm_generation=fake)).generate(
        [[1, 2], [3]], max_new_tokens=7
    )
    assert [o.ids for o in out] == [[5, 6], [5, 6]] and out[0].logprobs == [-0.5, -0.25]
    assert calls[0][1] == 7 and calls[0][2] == 1 and fake.max_completion_length == 512


QWEN3_LIKE = (
    "{% for m in messages %}{% if m.role == 'assistant' %}<|im_start|>assistant\n"
    "{{ m.content.split('</think>')[-1].lstrip('\n') }}<|im_end|>\n"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def test_reply_tokens_follow_template_kwargs_and_history_rewriting_templates(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = QWEN3_LIKE  # drops <think> from earlier turns: not prefix-preserving
    turns = ChatTurns(tokenizer, {"enable_thinking": False})
    reply = tokenizer.decode(turns.reply_ids("a sink", [7, tokenizer.eos_token_id]))
    assert reply == "\n<|im_start|>user\na sink<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    truncated = turns.reply_ids("a sink", [7, 8])
    assert truncated[0] == tokenizer.eos_token_id  # the env closes a turn the model did not finish
    prompt = tokenizer.decode(turns.prompt_ids([{"role": "user", "content": "go"}]))
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    tokenizer.chat_template = "{% for m in messages %}{{ m.role }}{% endfor %}"
    with pytest.raises(ValueError, match="drops message contents"):
        ChatTurns(tokenizer)


def test_each_episode_keeps_its_own_turn_budget(tokenizer):
    long_turn = "<think>" + "word " * 40 + "</think>"  # format-invalid: the episode goes on
    settings = RolloutSettings(max_turns=2, max_turn_tokens=50, parser="strict")
    _, episodes, generator = _play(tokenizer, [1, 2], {1: [long_turn], 2: ["no tags"]}, budget=150, settings=settings)
    # after turn 1 the long episode has 50 + 70 tokens (room 30), the short one 12 + 69 (room 69): the second turn
    # is not cut to the smallest room for everyone; the long episode alone is cut to its budget
    assert generator.calls == [(2, 50), (2, 50)]
    assert len(episodes[0].completion_ids) == 150 and len(episodes[1].completion_ids) < 150


def test_rank_without_episodes_keeps_calling_the_generator_while_others_play(tokenizer):
    # vLLM server mode gathers prompts across processes: a rank whose episodes ended must still take part
    rollout = EnvRollout(ScriptedEnv.counter)
    prompts = [row["prompt"] for row in rollout.dataset([0])]
    turns = ChatTurns(tokenizer)
    generator = ScriptedGenerator(tokenizer, [(turns.prompt_ids(prompts[0]), [INC])])
    other_ranks_active = iter([True, True, True, False])
    episodes = rollout.run([0], prompts, generator, turns, 500, any_active=lambda local: next(other_ranks_active))
    assert episodes[0].won and [n for n, _ in generator.calls] == [1, 0, 0]


def test_turn_cut_by_the_episode_budget_is_not_played_and_keeps_logprobs_aligned(tokenizer):
    # one turn of ~40 tokens, an episode budget of 20: the cut turn's action must not reach the environment, and its
    # sampling log-probs are cut with its tokens (vLLM importance sampling needs one log-prob per token)
    class WithLogprobs(ScriptedGenerator):
        def generate(self, contexts, max_new_tokens):
            return [Generated(o.ids, [-0.1] * len(o.ids)) for o in super().generate(contexts, max_new_tokens)]

    rollout = EnvRollout(ScriptedEnv.counter, settings=RolloutSettings(max_turn_tokens=64))
    prompts = [row["prompt"] for row in rollout.dataset([0])]
    turns = ChatTurns(tokenizer)
    text = "<think>" + "count " * 30 + "</think><action>inc</action>"
    generator = WithLogprobs(tokenizer, [(turns.prompt_ids(prompts[0]), [text])])
    [episode] = rollout.run([0], prompts, generator, turns, budget=20)
    assert len(episode.completion_ids) == len(episode.logprobs) == len(episode.env_mask) == 20
    assert episode.budget_ended and episode.env.steps == 0 and not episode.won and episode.env_reward == 0.0
    out = rollout.to_rollout_output([episode], with_logprobs=True)
    assert len(out["logprobs"][0]) == len(out["completion_ids"][0])
    assert rollout.metrics([episode])["env/counter/budget_ended"] == 1.0


GEMMA_LIKE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m.role == 'assistant' else m.role }}\n"
    "{{ m.content }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def test_end_of_turn_tokens_other_than_eos_give_the_templates_transcript(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<end_of_turn>", "<|endoftext|>"]})
    end, other = tokenizer.convert_tokens_to_ids(["<end_of_turn>", "<|endoftext|>"])
    tokenizer.chat_template = GEMMA_LIKE
    turns = ChatTurns(tokenizer)
    assert turns.end_of_turn_id == end != tokenizer.eos_token_id
    model = tokenizer("<think>x</think><action>go</action>", add_special_tokens=False)["input_ids"]
    # the model stopped on the template's own end-of-turn token: the reply continues after it, no second one
    reply = turns.reply_ids("you see a desk", model + [end])
    convo = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "<think>x</think><action>go</action>"},
             {"role": "user", "content": "you see a desk"}]  # fmt: skip
    rendered = tokenizer.apply_chat_template(convo, tokenize=False, add_generation_prompt=True)
    head = tokenizer.apply_chat_template(convo[:1], tokenize=False, add_generation_prompt=True)
    assert tokenizer.decode(model + [end] + reply) == rendered[len(head) :]
    # stopped on another stop id, or cut by the token limit: the template's end-of-turn follows
    assert turns.reply_ids("you see a desk", model + [other])[0] == end
    assert turns.reply_ids("you see a desk", model)[0] == end


def test_logprobs_stay_aligned_when_one_episode_of_a_batch_runs_out_of_budget(tokenizer):
    class WithLogprobs(ScriptedGenerator):
        def generate(self, contexts, max_new_tokens):
            return [Generated(o.ids, [-0.1] * len(o.ids)) for o in super().generate(contexts, max_new_tokens)]

    long_turn = "<think>" + "word " * 40 + "</think>"
    settings = RolloutSettings(max_turns=2, max_turn_tokens=50, parser="strict")
    rollout = EnvRollout(ScriptedEnv.counter, settings=settings)
    prompts = [row["prompt"] for row in rollout.dataset([1, 2])]
    turns = ChatTurns(tokenizer)
    scripts = [(turns.prompt_ids(prompts[0]), [long_turn]), (turns.prompt_ids(prompts[1]), ["no tags"])]
    episodes = rollout.run([1, 2], prompts, WithLogprobs(tokenizer, scripts), turns, budget=150)
    assert episodes[0].budget_ended and len(episodes[0].completion_ids) == 150
    for e in episodes:  # the batch's max_new_tokens came from the other episode's room
        assert len(e.logprobs) == len(e.completion_ids) == len(e.env_mask)


@pytest.mark.parametrize("collective", [False, True])
def test_sharded_hf_generation_plays_every_turn_in_step_with_the_other_processes(tokenizer, monkeypatch, collective):
    # FSDP / ZeRO-3: each turn's generate is a collective, so play() asks the other processes whether any episode is
    # still running (here: the others play 3 more turns after this process's episode ends)
    import torch

    from trl_sdar.agent import rollout as rollout_module

    rollout = EnvRollout(ScriptedEnv.counter, settings=STRICT)
    prompts = [row["prompt"] for row in rollout.dataset([0])]
    turns = ChatTurns(tokenizer)
    generator = ScriptedGenerator(tokenizer, [(turns.prompt_ids(prompts[0]), [INC])])
    generator.collective = collective
    monkeypatch.setattr(rollout_module, "make_generator", lambda trainer: generator)
    others = iter([1.0, 1.0, 1.0, 0.0])  # the other processes' active flags, turn by turn
    accelerator = SimpleNamespace(device=torch.device("cpu"),
                                  reduce=lambda flag, reduction: flag + next(others))  # fmt: skip
    trainer = SimpleNamespace(processing_class=tokenizer, accelerator=accelerator,
                              args=SimpleNamespace(use_vllm=False, max_completion_length=500))  # fmt: skip
    episodes = rollout.play(prompts, trainer)
    assert episodes[0].won
    assert [n for n, _ in generator.calls] == ([1, 0, 0] if collective else [1])
