"""SDARTrainer trains through each built-in environment (tiny model, CPU), with the skills reaching the teacher."""

import importlib.util

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_sdar import SDARConfig, SDARTrainer
from trl_sdar.agent.rollout import EnvRollout, RolloutSettings, env_reward
from trl_sdar.envs import ENV_CLASSES, make_env
from trl_sdar.skills.task_context import skills_for

ENVS = [name for name, (module, _) in ENV_CLASSES.items() if importlib.util.find_spec(module) is not None]
SKILLS = {"doors": "task"}  # the doors world's context is the task's own; the benchmarks read their skill banks
CONTEXT_TOKENS = {"doors": 10}  # at least this many context tokens reach the teacher (the banks: 100)


@pytest.mark.parametrize("env_name", ENVS)
def test_sdar_trains_two_steps_through_env(env_name, tiny_model_dir, tmp_path):
    rollout = EnvRollout(
        lambda: make_env(env_name),
        skills=skills_for(env_name, SKILLS.get(env_name, "rules")),
        settings=RolloutSettings(max_turns=2, max_turn_tokens=6),
    )
    dataset = rollout.dataset(range(2))
    args = SDARConfig(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", save_strategy="no",
        gradient_checkpointing=False, num_generations=2, per_device_train_batch_size=4, max_completion_length=256,
        max_steps=2, logging_steps=1, learning_rate=1e-3,
    )  # fmt: skip
    trainer = SDARTrainer(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        env_reward,
        args=args,
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        rollout_func=rollout,
    )
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    for log in logs:
        assert log["sdar/rows_without_teacher"] == 0.0  # every row's skills reached the teacher
        assert log["sdar/context_tokens"] > CONTEXT_TOKENS.get(env_name, 100)
        assert 0.0 < log["sdar/gate_mean"] < 1.0
        assert log[f"env/{env_name}/turns"] >= 1 and 0.0 <= log[f"env/{env_name}/success"] <= 1.0
    assert any(not p.detach().equal(b) for p, b in zip(trainer.model.parameters(), before, strict=True))
    task = make_env(env_name).task(0)
    assert dataset[0]["privileged_context"] == skills_for(env_name, SKILLS.get(env_name, "rules"))(task)
