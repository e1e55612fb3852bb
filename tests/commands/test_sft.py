"""`trl-sdar sft`: expert demonstrations rendered by the rollout, trained with TRL's SFTTrainer, loaded by RL/eval.

Prompts are checked against an independent rebuild from `agent.prompts.step_prompt` and the chat template; masks
against the expert's own text; TRL's labels against the masks; the trained model against its loss on the demos.
"""

import json
import random

import pytest
from transformers import AutoTokenizer

from trl_sdar.agent.parsing import parse_turn
from trl_sdar.agent.prompts import StepView, remembered_observation, step_prompt
from trl_sdar.commands.sft import DemoSettings, completion_loss, parse_sft_args, render_demonstrations, to_dataset
from trl_sdar.commands.sft.rationale import alfworld_rationale, webshop_rationale
from trl_sdar.envs import make_env
from trl_sdar.envs.alfworld_games import EASY
from trl_sdar.skills import SkillSelector

IDS = range(128, 150)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def alfworld():
    return make_env("alfworld", difficulty=EASY)


def _chat_prompt_ids(tokenizer, text):
    messages = [{"role": "user", "content": text}]
    return tokenizer(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                     add_special_tokens=False)["input_ids"]  # fmt: skip


def _replay_prompts(env, task_id, actions, window):
    """The step prompts of an episode rebuilt independently: play `actions`, keep (observation, action) pairs."""
    task, obs, history, prompts = env.task(task_id), env.reset(task_id), [], []
    for action in actions:
        prompts.append(step_prompt(env.name, env.action_tag, StepView(task, obs, tuple(history[-window:]),
                                                                     len(history))))  # fmt: skip
        history.append((remembered_observation(env.name, obs, task), action))  # WebShop: the formatted page
        obs = env.step(action).observation
    return prompts


@pytest.mark.parametrize("env_name", ["alfworld", "webshop"])
def test_turn_rows_are_the_step_prompts_rl_shows_and_the_expert_turn(env_name, tokenizer, alfworld):
    env = alfworld if env_name == "alfworld" else make_env("webshop")
    demos, dropped = render_demonstrations(env, tokenizer, IDS, 2, DemoSettings(history_window=2))
    assert len(demos) == 2 and not dropped
    for demo in demos:
        actions = [parse_turn(r["completion_text"], "action", env_name=env_name).action for r in demo.rows]
        rebuilt = _replay_prompts(make_env(env_name, **({"difficulty": EASY} if env_name == "alfworld" else {})),
                                  demo.task_id, actions, window=2)  # fmt: skip
        assert len(demo.rows) == len(rebuilt) >= 3
        for row, prompt in zip(demo.rows, rebuilt, strict=True):
            assert row["prompt_text"] == prompt
            prompt_ids = _chat_prompt_ids(tokenizer, prompt)
            n = len(prompt_ids)
            assert row["input_ids"][:n] == prompt_ids
            assert row["completion_mask"] == [0] * n + [1] * (len(row["input_ids"]) - n)
            completion = tokenizer.decode(row["input_ids"][n:])
            assert completion == row["completion_text"] + "<|im_end|>"  # the model learns to stop
            assert row["completion_text"].startswith("<think>") and "</think><action>" in row["completion_text"]
            parsed = parse_turn(row["completion_text"], "action", env_name=env_name)
            assert parsed.valid
        # a later step shows the history window: the two previous actions, not the first one
        assert f"Action {len(rebuilt) - 1}: '{actions[-2]}'" in demo.rows[-1]["prompt_text"]
        if len(actions) > 3:
            assert f"Action 1: '{actions[0]}'" not in demo.rows[-1]["prompt_text"]


def test_turn_rows_match_trls_own_conversational_tokenization(tokenizer):
    """Our tokenized rows are what SFTTrainer would make of the prompt/completion conversation (up to the
    template's newline after the end-of-turn token, which generation never reaches)."""
    demos, _ = render_demonstrations(make_env("search_qa"), tokenizer, IDS, 1, DemoSettings(history_window=4))
    for row in demos[0].rows:
        convo = [{"role": "user", "content": row["prompt_text"]},
                 {"role": "assistant", "content": row["completion_text"]}]  # fmt: skip
        trl_ids = tokenizer(tokenizer.apply_chat_template(convo, tokenize=False), add_special_tokens=False)
        assert trl_ids["input_ids"][: len(row["input_ids"])] == row["input_ids"]
        assert tokenizer.decode(trl_ids["input_ids"][len(row["input_ids"]) :]) == "\n"


def test_episode_rows_mask_the_environment_replies(tokenizer):
    env = make_env("search_qa")
    demos, _ = render_demonstrations(env, tokenizer, IDS, 2, DemoSettings(rollout_unit="episode"))
    for demo in demos:
        (row,) = demo.rows
        ids, mask = row["input_ids"], row["completion_mask"]
        spans, current = [], []
        for token, bit in zip(ids, mask, strict=True):
            if bit:
                current.append(token)
            elif current:
                spans.append(current)
                current = []
        spans += [current] if current else []
        texts = row["completion_text"].split("\n")
        assert [tokenizer.decode(s) for s in spans] == [t + "<|im_end|>" for t in texts]
        assert len(texts) == 3 and texts[-1].endswith("</answer>")  # two searches, then the answer
        first = _chat_prompt_ids(tokenizer, step_prompt("search_qa", "search_qa", StepView(env.task(demo.task_id),
                                                        env.reset(demo.task_id))))  # fmt: skip
        assert ids[: len(first)] == first and not any(mask[: len(first)])
        replies = tokenizer.decode([t for t, bit in zip(ids[len(first) :], mask[len(first) :]) if not bit])
        assert replies.count("<|im_start|>user\n<information>") == 2  # each search's results, never trained


def test_skills_fraction_in_the_teacher_and_the_student_layout(tokenizer):
    from trl_sdar.method.teacher import ContextTokenizer

    env, skills = make_env("webshop"), SkillSelector.builtin("webshop")
    teacher = DemoSettings(skills_fraction=0.5)
    demos, _ = render_demonstrations(env, tokenizer, IDS, 4, teacher, skills=skills)
    assert sum(d.with_skills for d in demos) == 2
    encode = ContextTokenizer(tokenizer, placement="prefix", header=teacher.teacher_context_header)
    for demo in demos:
        context = encode(skills(env.task(demo.task_id)))
        for row in demo.rows:
            plain = _chat_prompt_ids(tokenizer, row["prompt_text"])
            expected = context + plain if demo.with_skills else plain
            assert row["input_ids"][: len(expected)] == expected
            assert not any(row["completion_mask"][: len(expected)])  # skills and prompt never trained
    student, _ = render_demonstrations(env, tokenizer, IDS, 4, DemoSettings(skills_fraction=0.5,
                                       skills_layout="student"), skills=skills)  # fmt: skip
    for demo in student:
        assert demo.rows[0]["prompt_text"].startswith(skills(env.task(demo.task_id))) == demo.with_skills
    with pytest.raises(ValueError, match="skills_fraction"):
        render_demonstrations(env, tokenizer, IDS, 2, DemoSettings(skills_fraction=0.5))
    with pytest.raises(ValueError, match="skills_layout"):
        DemoSettings(skills_layout="system")


def test_rationales_are_varied_and_name_what_the_action_uses(alfworld):
    task = alfworld.task(128)
    plan = ["go to sinkbasin 1", "take potato 1 from sinkbasin 1", "clean potato 1 with sinkbasin 1"]
    texts = {alfworld_rationale(task, plan, "", random.Random(seed)) for seed in range(12)}
    assert len(texts) >= 2 and all("potato" in t and "sinkbasin 1" in t for t in texts)
    carry = alfworld_rationale(task, ["go to microwave 1", "open microwave 1", "move potato 1 to microwave 1"],
                               "potato 1", random.Random(0))  # fmt: skip
    assert "potato" in carry and "microwave 1" in carry and "put it there" in carry
    shop = make_env("webshop").task(128)
    assert "black" in webshop_rationale(shop, "click[black]", 1, random.Random(0))


def test_too_few_tasks_and_cut_rows_are_refused(tokenizer):
    env = make_env("search_qa")
    with pytest.raises(ValueError, match="num_demos=3 but only 2"):
        render_demonstrations(env, tokenizer, [128, 129], 3, DemoSettings())
    with pytest.raises(ValueError, match="format check .is max_turn_tokens too small"):  # a cut turn is never kept
        render_demonstrations(env, tokenizer, [128, 129, 130], 1, DemoSettings(max_turn_tokens=8))


def _sft_argv(model_dir, out, *extra):
    return ["sft", "--model_name_or_path", model_dir, "--env_name", "search_qa", "--num_demos", "2",
            "--output_dir", str(out), "--use_cpu", "true", "--bf16", "false", "--report_to", "none",
            "--save_strategy", "no", "--max_length", "4096", "--per_device_train_batch_size", "2",
            "--logging_steps", "1", "--gradient_checkpointing", "false", *extra]  # fmt: skip


def test_sft_trains_on_completion_tokens_only_and_lowers_their_loss(tiny_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    demos, _ = render_demonstrations(make_env("search_qa"), tokenizer, IDS, 2, DemoSettings())
    rows = [r for d in demos for r in d.rows]
    config = SFTConfig(output_dir="/tmp/unused", use_cpu=True, bf16=False, report_to="none", max_length=None,
                       completion_only_loss=True, max_steps=12, learning_rate=3e-3, per_device_train_batch_size=3,
                       save_strategy="no", gradient_checkpointing=False, seed=0)  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = completion_loss(model, rows)
    trainer = SFTTrainer(model=model, args=config, train_dataset=to_dataset(demos, None), processing_class=tokenizer)
    for prepared, row in zip(trainer.train_dataset, rows, strict=True):
        labels = prepared["labels"]
        assert [t != -100 for t in labels] == [bool(b) for b in row["completion_mask"]]
    trainer.train()
    after = completion_loss(trainer.model, rows)
    assert after < before - 0.5, (before, after)


def test_cli_sft_lora_folder_loads_in_eval_and_train(tiny_model_dir, tmp_path):
    from trl_sdar.cli import main
    from trl_sdar.commands.evaluate.policy import load_policy

    out = tmp_path / "warm"
    main(_sft_argv(tiny_model_dir, out, "--max_steps", "1", "--use_peft", "true", "--lora_target_modules",
                   "q_proj", "v_proj", "--lora_r", "4"))  # fmt: skip
    assert (out / "config.json").exists() and not (out / "adapter_config.json").exists()  # merged
    summary = json.loads((out / "sft_summary.json").read_text())
    assert summary["num_demos"] == 2 and summary["steps"] == 1 and summary["saved"] == "merged model"
    lines = [json.loads(line) for line in (out / "demos.jsonl").read_text().splitlines()]
    assert len(lines) == summary["num_rows"] and lines[0]["completion"].startswith("<think>")
    model, _ = load_policy(str(out))
    assert sum(p.numel() for p in model.parameters()) > 0
    report = tmp_path / "eval.json"
    main(["eval", "--model", str(out), "--env", "search_qa", "--num-tasks", "2", "--max-turns", "2",
          "--max-turn-tokens", "6", "--batch-size", "2", "--output", str(report)])  # fmt: skip
    evaluated = json.loads(report.read_text())
    assert 0.0 <= evaluated["valid_format_rate"] <= 1.0 and "valid_format_rate" in evaluated["per_seed"][0]
    main(["train", "--config", "recipes/quickstart/grpo_smollm2_alfworld_cpu.yaml", "--model_name_or_path",
          str(out), "--env_name", "search_qa", "--max_steps", "1", "--max_turns", "2", "--max_turn_tokens", "6",
          "--max_completion_length", "6", "--output_dir", str(tmp_path / "rl")])  # fmt: skip
    assert (tmp_path / "rl" / "adapter_config.json").exists()


def test_cli_sft_errors_name_the_field(tiny_model_dir, tmp_path):
    from trl_sdar.cli import main

    with pytest.raises(SystemExit, match="max_length=64 would cut"):
        main([*_sft_argv(tiny_model_dir, tmp_path / "x"), "--max_length", "64"])
    with pytest.raises(SystemExit, match="skills_layout='both' is not valid"):
        main([*_sft_argv(tiny_model_dir, tmp_path / "x"), "--skills_layout", "both"])
    with pytest.raises(SystemExit, match="Unknown sft argument"):
        main([*_sft_argv(tiny_model_dir, tmp_path / "x"), "--num_train_tasks", "3"])


def test_the_quickstart_sft_recipe_parses():
    warm, training, model = parse_sft_args(["--config", "recipes/quickstart/sft_smollm2_alfworld_cpu.yaml"])
    assert (warm.env_name, warm.env_difficulty, warm.rollout_unit) == ("alfworld", "easy", "turn")
    assert model.model_name_or_path == "builtin:smollm2" and model.use_peft and not training.bf16


def test_task_types_demonstrate_only_those_tasks(tokenizer):
    from trl_sdar.commands.sft.run import build_demonstrations, demo_task_ids

    warm, _, _ = parse_sft_args(["--env_name", "search_qa", "--num_demos", "3", "--demo_task_start", "0",
                                 "--task_types", "comparison", "--output_dir", "x", "--use_cpu", "true",
                                 "--bf16", "false"])  # fmt: skip
    assert warm.task_types == ["comparison"] and len(demo_task_ids(warm)) == 16 * (2 * 3 + 16)
    demos, _ = build_demonstrations(warm, tokenizer, seed=0)
    env = make_env("search_qa")
    assert [d.task_type for d in demos] == ["comparison"] * 3
    assert [env.task(d.task_id).task_type for d in demos] == ["comparison"] * 3
    assert [d.task_id for d in demos][:2] == [3, 10]  # the first comparison questions, in id order
    warm.task_types = ["no_such_kind"]
    with pytest.raises(
        ValueError, match=r"task_types=\['no_such_kind'\]: 'no_such_kind' is not a search_qa task type; valid"
    ):
        build_demonstrations(warm, tokenizer, seed=0)
