"""SDARTrainer invariants on the tiny model: GRPO equivalence, teacher isolation, masks, metrics, truncation."""

import logging

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from trl_sdar import SDARConfig, SDARTrainer
from trl_sdar.method.losses import aggregate_like_grpo, sdar_per_token_loss

FAST = {
    "use_cpu": True,
    "bf16": False,
    "report_to": "none",
    "save_strategy": "no",
    "num_generations": 2,
    "per_device_train_batch_size": 4,
    "max_completion_length": 8,
    "gradient_checkpointing": False,
    "learning_rate": 1e-2,
    "logging_steps": 1,
    "seed": 7,
}
LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.0}


def length_reward(completions, **kwargs):
    return [float(len(c[0]["content"]) % 5) for c in completions]


def _dataset(n=8, context=lambda i: "skills: rinse the mug in the sink first" if i % 2 == 0 else None):
    rows = [{"prompt": [{"role": "user", "content": f"task {i}: put a clean mug"}]} for i in range(n)]
    for i, row in enumerate(rows):
        row["privileged_context"] = context(i)
    return Dataset.from_list(rows)


def _trainer(tiny_model_dir, tmp_path, cls=SDARTrainer, peft=False, dataset=None, **overrides):
    from peft import LoraConfig

    config_cls = SDARConfig if cls is SDARTrainer else GRPOConfig
    args = config_cls(output_dir=str(tmp_path), **{**FAST, **overrides})
    return cls(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        length_reward,
        args=args,
        train_dataset=dataset if dataset is not None else _dataset(),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        peft_config=LoraConfig(**LORA) if peft else None,
    )


def _batch(trainer, n=4):
    trainer.current_gradient_accumulation_steps = 1  # normally set inside Trainer.train()
    trainer.model.train()
    rows = [dict(trainer.train_dataset[i // 2]) for i in range(n)]  # groups of num_generations=2
    return trainer._generate_and_score_completions(rows)


def test_sdar_coef_zero_trains_exactly_like_grpo(tiny_model_dir, tmp_path):
    # Each trainer seeds the global RNG in __init__, so build-then-train one after the other (same sampling).
    grpo = _trainer(tiny_model_dir, tmp_path / "g", cls=GRPOTrainer, max_steps=2)
    start = {n: p.detach().clone() for n, p in grpo.model.named_parameters()}
    grpo.train()
    sdar = _trainer(tiny_model_dir, tmp_path / "s", sdar_coef=0.0, max_steps=2)
    sdar.train()
    assert sdar.teacher is None
    changed = [n for n, p in grpo.model.named_parameters() if not torch.equal(p, start[n])]
    assert changed, "training must move the weights for this comparison to mean anything"
    for (name, a), (_, b) in zip(grpo.model.named_parameters(), sdar.model.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    losses = [[h["loss"] for h in t.state.log_history if "loss" in h] for t in (grpo, sdar)]
    assert losses[0] == losses[1]


def test_sdar_loss_is_grpo_plus_lambda_times_gated_term(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, sdar_coef=0.5)
    inputs = _batch(trainer)
    torch.manual_seed(0)
    total = trainer.compute_loss(trainer.model, inputs)
    grpo = GRPOTrainer._compute_loss(trainer, trainer.model, inputs)
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    with torch.no_grad():
        student, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, attention, inputs["completion_ids"].size(1)
        )
    per_token, _, _ = sdar_per_token_loss(student, inputs["teacher_per_token_logps"], gate_beta=5.0)
    expected = aggregate_like_grpo(
        per_token * inputs["sdar_row_mask"].unsqueeze(1),
        inputs["completion_mask"],
        "dapo",
        num_items_in_batch=inputs["num_items_in_batch"],
        steps_per_generation=trainer.args.steps_per_generation,
    )
    assert expected.abs().item() > 0
    assert (total - grpo).item() == pytest.approx(0.5 * expected.item(), rel=1e-4, abs=1e-7)
    # rows without privileged context are excluded from distillation
    contexts = [row.get("privileged_context") for row in [dict(trainer.train_dataset[i // 2]) for i in range(4)]]
    assert inputs["sdar_row_mask"].tolist() == [1.0 if c else 0.0 for c in contexts]


def test_teacher_log_probs_carry_no_gradient_and_see_the_context(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path)
    inputs = _batch(trainer)
    teacher = inputs["teacher_per_token_logps"]
    assert not teacher.requires_grad and teacher.shape == inputs["completion_ids"].shape
    tok = trainer.processing_class
    with_ctx = int(inputs["sdar_row_mask"].argmax())
    text = tok.decode(inputs["teacher_prompt_ids"][with_ctx][inputs["teacher_prompt_mask"][with_ctx].bool()])
    assert text.startswith("[Privileged Skill Information]\nskills: rinse the mug")
    student_prompt = inputs["prompt_ids"][with_ctx][inputs["prompt_mask"][with_ctx].bool()].tolist()
    teacher_prompt = inputs["teacher_prompt_ids"][with_ctx][inputs["teacher_prompt_mask"][with_ctx].bool()].tolist()
    assert teacher_prompt[-len(student_prompt) :] == student_prompt  # exact student ids, no re-tokenisation


def test_environment_tokens_never_enter_the_sdar_term(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, sdar_coef=1.0)
    inputs = _batch(trainer)
    tool_mask = torch.ones_like(inputs["completion_mask"])
    tool_mask[:, 2:5] = 0  # environment-inserted tokens
    inputs["tool_mask"] = tool_mask
    inputs["num_items_in_batch"] = (inputs["completion_mask"] * tool_mask).sum()

    def loss_and_grads(teacher_logps):
        trainer.model.zero_grad()
        trainer._metrics["train"].clear()
        loss = trainer.compute_loss(trainer.model, {**inputs, "teacher_per_token_logps": teacher_logps})
        loss.backward()
        grads = [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]
        return loss.item(), grads, dict(trainer._metrics["train"])

    base = inputs["teacher_per_token_logps"]
    perturbed = base.clone()
    perturbed[:, 2:5] = torch.randn_like(perturbed[:, 2:5]) * 10  # only at environment positions
    a, grads_a, metrics_a = loss_and_grads(base)
    b, grads_b, metrics_b = loss_and_grads(perturbed)
    assert a == pytest.approx(b, abs=1e-7)
    assert all(torch.allclose(x, y, atol=1e-7) for x, y in zip(grads_a, grads_b, strict=True))
    assert metrics_a["sdar/gate_mean"] == metrics_b["sdar/gate_mean"]
    moved = base.clone()
    moved[:, 0] -= 3.0  # a trained position: must change the term
    c, _, _ = loss_and_grads(moved)
    assert c != pytest.approx(a, abs=1e-7)


def test_training_logs_sdar_metrics(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, max_steps=2)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    for log in logs:
        assert 0.0 < log["sdar/gate_mean"] < 1.0
        assert 0.0 <= log["sdar/gate_active_ratio"] <= 1.0
        assert "sdar/teacher_gap_mean" in log and "sdar/loss" in log
        assert log["sdar/rows_without_teacher"] == 2.0  # half the rows of the 4-row batch have no context
        assert log["sdar/context_tokens"] > 5 and log["sdar/context_truncated"] == 0.0


@pytest.mark.parametrize("kind", ["live", "base", "ema"])
def test_lora_base_weights_frozen_and_teacher_never_trained(tiny_model_dir, tmp_path, kind):
    trainer = _trainer(tiny_model_dir, tmp_path, peft=True, teacher_model_kind=kind, max_steps=2)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    flags = {n: p.requires_grad for n, p in trainer.model.named_parameters()}
    teacher_ids = {id(p) for p in trainer.teacher.teacher_params()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not (optimized & teacher_ids)
    for name, p in after.items():
        assert p.requires_grad == flags[name], f"requires_grad of {name} not restored"
        if "lora_" not in name:
            assert torch.equal(p, before[name]), f"base weight {name} changed"
    assert any(not torch.equal(p, before[n]) for n, p in after.items() if ".default." in n)
    assert trainer.model.active_adapter == "default"
    if kind == "ema":
        teacher = [n for n in after if ".teacher." in n]
        assert teacher and all(after[n].grad is None for n in teacher)
        # the EMA teacher moved towards the student, but is not the student
        assert any(not torch.equal(after[n], before[n]) for n in teacher)
        assert any(not torch.equal(after[n], after[n.replace(".teacher.", ".default.")]) for n in teacher)
    else:
        assert not any(".teacher." in n for n in after)


def test_context_from_rollout_func_extra_field_with_env_mask(tiny_model_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)

    def rollout_func(prompts, trainer):
        prompt_ids = [tok.apply_chat_template(p, add_generation_prompt=True) for p in prompts]
        prompt_ids = [list(p["input_ids"]) if hasattr(p, "keys") else list(p) for p in prompt_ids]
        completion = tok("<action>go</action> obs: a sink <action>take</action>")["input_ids"]
        env_mask = [1] * 5 + [0] * (len(completion) - 9) + [1] * 4
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": [completion] * len(prompts),
            "logprobs": None,
            "env_mask": [env_mask] * len(prompts),
            "privileged_context": ["skill from the rollout"] * len(prompts),
        }

    args = SDARConfig(output_dir=str(tmp_path), **FAST)
    trainer = SDARTrainer(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        length_reward,
        args=args,
        train_dataset=_dataset(context=lambda i: None),
        processing_class=tok,
        rollout_func=rollout_func,
    )
    inputs = _batch(trainer)
    assert inputs["sdar_row_mask"].tolist() == [1.0] * 4
    assert "skill from the rollout" in tok.decode(inputs["teacher_prompt_ids"][0])
    assert inputs["tool_mask"].sum().item() == 4 * 9


def test_truncation_keeps_context_and_counts(tiny_model_dir, tmp_path, caplog):
    long_ctx = "skills: " + "rinse the mug " * 6
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ctx_len = len(tok("[Privileged Skill Information]\n" + long_ctx + "\n\n")["input_ids"])
    trainer = _trainer(
        tiny_model_dir,
        tmp_path,
        dataset=_dataset(context=lambda i: long_ctx if i == 0 else "x " * 200),
        teacher_max_prompt_length=ctx_len + 3,
    )
    with caplog.at_level(logging.WARNING, logger="trl_sdar.method.trainer"):
        inputs = _batch(trainer)
    # rows 0-1: context kept whole, only 3 student-prompt tokens left; rows 2-3: context alone over the limit
    assert inputs["sdar_row_mask"].tolist() == [1.0, 1.0, 0.0, 0.0]
    text = tok.decode(inputs["teacher_prompt_ids"][0][inputs["teacher_prompt_mask"][0].bool()])
    assert text.startswith("[Privileged Skill Information]\n" + long_ctx)
    assert int(inputs["teacher_prompt_mask"][0].sum()) == ctx_len + 3
    metrics = trainer._metrics["train"]
    assert metrics["sdar/context_truncated"][-1] == 2.0 and metrics["sdar/rows_without_teacher"][-1] == 2.0
    assert "kept whole" in caplog.text and "no distillation" in caplog.text


def test_per_microbatch_teacher_matches_rollout_time_teacher_before_any_update(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, teacher_logps_per_microbatch=True)
    inputs = _batch(trainer)
    assert "teacher_per_token_logps" not in inputs
    recomputed = trainer._teacher_logps(inputs)
    trainer.args.teacher_logps_per_microbatch = False
    rollout = trainer._teacher_logps(inputs, batch_size=2)
    assert torch.allclose(recomputed, rollout, atol=1e-5)
    loss = trainer.compute_loss(trainer.model, inputs)
    assert torch.isfinite(loss)


def test_rejects_grpo_config(tiny_model_dir, tmp_path):
    with pytest.raises(TypeError, match="SDARConfig"):
        SDARTrainer(
            AutoModelForCausalLM.from_pretrained(tiny_model_dir),
            length_reward,
            args=GRPOConfig(output_dir=str(tmp_path), **FAST),
            train_dataset=_dataset(),
        )


def test_opsd_baseline_is_the_distillation_term_alone(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, sdar_coef=1.0, rl_loss_coef=0.0)
    inputs = _batch(trainer)
    total = trainer.compute_loss(trainer.model, inputs)
    assert total.item() != 0.0
    trainer.args.rl_loss_coef = 1.0
    with_rl = trainer.compute_loss(trainer.model, inputs)
    grpo = GRPOTrainer._compute_loss(trainer, trainer.model, inputs)
    assert (with_rl - total).item() == pytest.approx(grpo.item(), abs=1e-6)


@pytest.mark.parametrize("kind", ["naive", "skill_sd", "rlsd"])
def test_baseline_loss_types_train(tiny_model_dir, tmp_path, kind):
    trainer = _trainer(tiny_model_dir, tmp_path, distill_loss_type=kind, max_steps=2, sdar_coef=0.001)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in logs)
    assert all("sdar/teacher_gap_mean" in h for h in logs)


def test_rlsd_reshapes_advantages_per_token_at_rollout(tiny_model_dir, tmp_path):
    from trl_sdar.method.losses import rlsd_advantages

    trainer = _trainer(tiny_model_dir, tmp_path, distill_loss_type="rlsd", sdar_coef=0.0)
    assert trainer.teacher is not None  # RLSD needs the teacher even without an extra loss
    inputs = _batch(trainer)
    advantages = inputs["advantages"]
    assert advantages.shape == inputs["completion_ids"].shape
    rows = inputs["sdar_row_mask"].bool()
    # rows without privileged context keep their sequence advantage on every token
    assert torch.allclose(advantages[~rows], advantages[~rows][:, :1].expand(-1, advantages.size(1)))
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    with torch.no_grad():
        student, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, attention, inputs["completion_ids"].size(1)
        )
    # recover the sequence advantage: the mean over tokens is not it, but row values at Δ = 0 would be; use formula
    base = advantages[rows][:, 0] / (0.5 + 0.5 * torch.clamp(
        torch.exp(torch.sign(advantages[rows][:, 0]) * (inputs["teacher_per_token_logps"][rows][:, 0]
                                                         - student[rows][:, 0])), 0.8, 1.2))  # fmt: skip
    expected = rlsd_advantages(base, inputs["teacher_per_token_logps"][rows], student[rows], lam=0.5)
    assert torch.allclose(advantages[rows], expected, atol=1e-5)


@pytest.mark.parametrize("share", [False, True])
def test_teacher_scores_only_rows_with_a_context(tiny_model_dir, tmp_path, share):
    trainer = _trainer(tiny_model_dir, tmp_path, teacher_logps_per_microbatch=True, teacher_share_prefix=share)
    inputs = _batch(trainer, n=8)  # rows 0-1 and 4-5 have a context, rows 2-3 and 6-7 do not
    has = inputs["sdar_row_mask"].bool()
    assert has.tolist() == [True, True, False, False, True, True, False, False]
    seen = []
    hook = trainer.model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["input_ids"]), with_kwargs=True)
    teacher = trainer._teacher_logps(inputs)
    hook.remove()
    # only the 4 context rows reach the model (before: all 8, and with sharing the contextless prompts' prefixes too)
    suffix_rows = [ids.size(0) for ids in seen if ids.size(0) > 1 or not share]
    assert sum(suffix_rows) == int(has.sum()) and len(seen) == (2 if share else 1)
    assert (teacher[~has] == 0).all()
    ids = torch.cat([inputs["teacher_prompt_ids"][has], inputs["completion_ids"][has]], dim=1)
    mask = torch.cat([inputs["teacher_prompt_mask"][has], inputs["completion_mask"][has]], dim=1)
    with torch.no_grad():
        expected, _, _ = GRPOTrainer._get_per_token_logps_and_entropies(
            trainer, trainer.model, ids, mask, inputs["completion_ids"].size(1), batch_size=8
        )
    assert torch.allclose(teacher[has], expected, atol=1e-5)


@pytest.mark.parametrize("contexts", ["some", "none"])
def test_sharded_teacher_without_prefix_sharing_joins_the_other_processes_forwards(tiny_model_dir, tmp_path, contexts):
    # ZeRO-3 / FSDP: another process needs 3 more forwards than this one (whose rows may all lack a context)
    trainer = _trainer(tiny_model_dir, tmp_path, teacher_logps_per_microbatch=True, teacher_share_prefix=False)
    inputs = _batch(trainer, n=8)
    if contexts == "none":
        inputs["sdar_row_mask"] = torch.zeros_like(inputs["sdar_row_mask"])
    asked = []
    trainer._most_forwards = lambda own: asked.append(own) or own + 3
    calls = []
    hook = trainer.model.register_forward_pre_hook(lambda m, a: calls.append(1))
    teacher = trainer._teacher_logps(inputs, batch_size=2)
    hook.remove()
    own = {"some": 2, "none": 0}[contexts]  # 4 context rows in batches of 2, or nothing to score
    assert asked == [own] and len(calls) == own + 3
    assert teacher.shape == inputs["completion_ids"].shape and (contexts == "some" or (teacher == 0).all())
