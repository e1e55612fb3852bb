"""SDARTrainer on turn rows: every baseline trains, and the loss is exact however the rows are split or padded."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_sdar import SDARConfig, SDARTrainer
from trl_sdar.agent.rollout import EnvRollout, RolloutSettings, env_reward
from trl_sdar.method.turns.passes import chunk_slices, chunks_needed, slice_rows
from trl_sdar.testing import ScriptedEnv

BASELINES = {
    "sdar": {},
    "grpo": {"sdar_coef": 0.0},
    "opsd": {"rl_loss_coef": 0.0},
    "naive": {"distill_loss_type": "naive"},
    "rlsd": {"distill_loss_type": "rlsd"},
    "skill_sd": {"distill_loss_type": "skill_sd", "sdar_coef": 0.001},
}


def _trainer(tiny_model_dir, tmp_path, student_sees_skills=False, **overrides):
    settings = RolloutSettings(rollout_unit="turn", max_turns=3, max_turn_tokens=8, history_window=2)
    rollout = EnvRollout(
        ScriptedEnv.fake_alfworld, skills=lambda t: "Privileged: press inc.", settings=settings,
        student_sees_skills=student_sees_skills,
    )  # fmt: skip
    config = dict(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", save_strategy="no",
        gradient_checkpointing=False, num_generations=2, per_device_train_batch_size=2, max_completion_length=8,
        max_steps=2, logging_steps=1, learning_rate=1e-3, seed=0, gradient_accumulation_steps=2,
    )  # fmt: skip
    config.update(overrides)
    return SDARTrainer(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        env_reward,
        args=SDARConfig(**config),
        train_dataset=rollout.dataset(range(4)),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        rollout_func=rollout,
    )


@pytest.mark.parametrize("name", [*BASELINES, "skill_grpo"])
def test_every_baseline_trains_two_steps_on_turn_rows(name, tiny_model_dir, tmp_path):
    overrides = BASELINES.get(name, {"sdar_coef": 0.0})
    trainer = _trainer(tiny_model_dir, tmp_path, student_sees_skills=name == "skill_grpo", **overrides)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    for log in logs:
        # 4 episodes of up to 3 turns each: more rows than prompts, every step
        assert 4 < log["turn/rows"] <= 12 and log["turn/trained_tokens"] > 0
        assert log["env/alfworld/turns"] >= 1
        if name not in ("grpo", "skill_grpo"):
            assert log["sdar/rows_without_teacher"] == log["turn/padding_rows"]  # only padding rows lack it
    assert any(not p.detach().equal(b) for p, b in zip(trainer.model.parameters(), before, strict=True))


def _batch(trainer):
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = trainer.args.gradient_accumulation_steps
    dataloader = trainer.get_train_dataloader()
    batch = next(iter(dataloader))
    return trainer._generate_and_score_completions(batch)


def _grads(trainer, inputs):
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "bnpo", "dr_grpo", "luspo"])
def test_split_passes_and_padding_rows_leave_the_loss_exact(loss_type, tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, loss_type=loss_type, entropy_coef=0.01, beta=0.0)
    inputs = _batch(trainer)
    rows = inputs["prompt_ids"].size(0)
    real = (inputs["completion_mask"] * inputs["tool_mask"]).sum(1) > 0
    assert float(inputs["num_rows_in_batch"]) == float(real.sum())
    whole_loss, whole = _grads(trainer, inputs)
    # several bounded passes (the first ones back-propagated inside compute_loss) give the same gradient and loss
    trainer.args.max_tokens_per_backward = 2 * (inputs["prompt_ids"].size(1) + inputs["completion_ids"].size(1))
    assert chunks_needed(rows, inputs["prompt_ids"].size(1) + inputs["completion_ids"].size(1),
                         trainer.args.max_tokens_per_backward) > 1  # fmt: skip
    split_loss, split = _grads(trainer, inputs)
    assert torch.allclose(split_loss, whole_loss, atol=1e-6)
    for a, b in zip(whole, split, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
    # dropping the padding rows changes nothing either
    trainer.args.max_tokens_per_backward = None
    if not real.all():
        unpadded = {k: (v[real] if isinstance(v, torch.Tensor) and v.ndim and v.size(0) == rows else v)
                    for k, v in inputs.items()}  # fmt: skip
        _, without = _grads(trainer, unpadded)
        for a, b in zip(whole, without, strict=True):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


def test_halves_of_a_batch_sum_to_the_whole(tiny_model_dir, tmp_path):
    # the grpo normaliser (a mean over rows) split over two chunks: each chunk's share adds up to the whole
    trainer = _trainer(tiny_model_dir, tmp_path, loss_type="grpo", beta=0.0)
    inputs = _batch(trainer)
    rows = inputs["prompt_ids"].size(0)
    whole_loss, _ = _grads(trainer, inputs)
    parts = [trainer.compute_loss(trainer.model, slice_rows(inputs, s, rows)).detach() for s in chunk_slices(rows, 2)]
    assert torch.allclose(sum(parts), whole_loss, atol=1e-6)


@pytest.mark.slow
def test_two_processes_with_uneven_turn_rows_stay_in_lockstep(tiny_model_dir, tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parent / "_turn_rows_2proc_worker.py"
    out = tmp_path / "result.json"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--main_process_port", "29533", str(script), str(out), tiny_model_dir]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRL_EXPERIMENTAL_SILENCE": "1"}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    a, b = data["checksums"]
    assert a == pytest.approx(b, abs=1e-6)  # same updates on both ranks: every collective matched up
    rows = data["rows_per_rank_and_step"]  # gathered: rank 0's steps, then rank 1's
    half = len(rows) // 2
    per_step = list(zip(rows[:half], rows[half:], strict=True))
    assert any(r0 != r1 for r0, r1 in per_step)  # the ranks really held different numbers of rows
    for log, (r0, r1) in zip(data["logs"], per_step, strict=True):
        assert log["turn/rows"] == pytest.approx((r0 + r1) / 2)
        assert log["turn/padding_rows"] == 2 * max(r0, r1) - r0 - r1  # each rank padded to the larger count


def test_turn_rows_refuse_entropy_quantile_masks(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="top_entropy_quantile=0.5"):
        _trainer(tiny_model_dir, tmp_path, top_entropy_quantile=0.5)


def test_logged_zero_std_share_is_over_the_grpo_groups_of_turn_rows(tiny_model_dir, tmp_path, monkeypatch):
    from trl_sdar.method.turns import batch as batch_module  # where the share replaces TRL's value

    trainer = _trainer(tiny_model_dir, tmp_path, sdar_coef=0.0)
    seen = []
    real = batch_module.zero_spread_share
    monkeypatch.setattr(
        batch_module, "zero_spread_share", lambda *a, **k: seen.append((a, real(*a, **k))) or seen[-1][1]
    )
    output = _batch(trainer)
    (scores, groups, episodes), share = seen[-1]
    assert trainer._metrics["train"]["frac_reward_zero_std"][-1] == share  # TRL's value replaced
    assert len(set(groups)) == 2 and len(groups) == len(scores) > 4  # 2 tasks, several turn rows each
    rows = output["advantages"][: len(scores)]
    moving = (rows.abs() > 1e-6).float().mean().item()  # rows with an outcome signal
    assert moving <= 1.0 - share + 1e-6 and (share < 1.0 or moving == 0.0)


@pytest.mark.parametrize(
    ("funcs", "weights"),
    [
        ("extra", None),  # a second reward function would be computed by TRL, then ignored by the turn advantages
        ("own", None),  # a user's own function instead of env_reward
        ("env", [2.0]),  # weights have nothing to weigh on turn rows
    ],
)
def test_turn_unit_refuses_reward_functions_it_would_ignore(funcs, weights, tiny_model_dir, tmp_path):
    def length_bonus(completions, **kwargs):
        return [0.1 * len(c) for c in completions]

    reward_funcs = {"extra": [env_reward, length_bonus], "own": [length_bonus], "env": [env_reward]}[funcs]
    settings = RolloutSettings(rollout_unit="turn", max_turns=2, max_turn_tokens=8)
    rollout = EnvRollout(ScriptedEnv.fake_alfworld, settings=settings)
    config = SDARConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", num_generations=2,
                        per_device_train_batch_size=2, max_completion_length=8, reward_weights=weights)  # fmt: skip
    with pytest.raises(ValueError, match="rollout_unit='turn' trains on the rollout's env_reward alone"):
        SDARTrainer(AutoModelForCausalLM.from_pretrained(tiny_model_dir), reward_funcs, args=config,
                    train_dataset=rollout.dataset(range(2)), rollout_func=rollout,
                    processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))  # fmt: skip


def _split_small(trainer, inputs):
    """A max_tokens_per_backward that makes `inputs` run as several passes."""
    width = inputs["prompt_ids"].size(1) + inputs["completion_ids"].size(1)
    trainer.args.max_tokens_per_backward = 2 * width
    assert chunks_needed(inputs["prompt_ids"].size(0), width, 2 * width) > 1


def test_adaptive_entropy_controller_steps_once_per_optimizer_step_with_split_passes(tiny_model_dir, tmp_path):
    # entropy far below the target: the controller raises the coefficient by one delta per optimizer step
    trainer = _trainer(tiny_model_dir, tmp_path, use_adaptive_entropy=True, entropy_coef=0.01,
                       entropy_coef_delta=0.005, entropy_target=100.0, max_steps=1, gradient_accumulation_steps=1,
                       max_tokens_per_backward=24)  # fmt: skip
    trainer.train()
    assert trainer.entropy_coef == pytest.approx(0.015)  # one step, one update (was 0.025 after a 3-pass step)
    log = next(h for h in trainer.state.log_history if "loss" in h)
    assert log["entropy_coef"] == pytest.approx(0.015)


def test_split_passes_log_the_unsplit_policy_loss_once_per_micro_batch(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, loss_type="grpo", entropy_coef=0.01, beta=0.0)
    inputs = _batch(trainer)
    inputs["advantages"] = torch.linspace(0.2, 1.0, inputs["advantages"].size(0))  # a loss far from zero
    trainer.model.zero_grad()
    trainer.compute_loss(trainer.model, inputs)
    whole = trainer._metrics["train"]["policy_loss"][:]
    _split_small(trainer, inputs)
    trainer.compute_loss(trainer.model, inputs)
    split = trainer._metrics["train"]["policy_loss"][len(whole) :]
    assert len(split) == 1  # one entry for the micro-batch, however many passes ran
    assert abs(whole[-1]) > 1e-3 and split[0] == pytest.approx(whole[-1], rel=1e-5)


def test_evaluation_with_split_passes_sums_the_passes_without_backward(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, loss_type="dapo", entropy_coef=0.01, beta=0.0)
    inputs = _batch(trainer)
    trainer.model.eval()
    with torch.no_grad():
        whole = trainer.compute_loss(trainer.model, inputs)
        _split_small(trainer, inputs)
        split = trainer.compute_loss(trainer.model, inputs)  # was: "element 0 of tensors does not require grad"
    assert torch.allclose(split, whole, atol=1e-6)
    assert all(p.grad is None or not p.grad.any() for p in trainer.model.parameters())


def test_evaluate_runs_turn_rows_in_split_passes(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, max_tokens_per_backward=24, per_device_eval_batch_size=2)
    metrics = trainer.evaluate(eval_dataset=trainer.train_dataset)
    assert math.isfinite(metrics["eval_loss"]) and metrics["eval_turn/rows"] > 2


def test_split_passes_add_no_policy_loss_entry_when_trl_logs_none(tiny_model_dir, tmp_path):
    trainer = _trainer(
        tiny_model_dir, tmp_path, entropy_coef=0.0, beta=0.0
    )  # no entropy bonus: TRL logs no policy_loss
    inputs = _batch(trainer)
    _split_small(trainer, inputs)
    trainer.compute_loss(trainer.model, inputs)
    assert "policy_loss" not in trainer._metrics["train"]  # an empty entry would be logged as None
