"""SDARTrainer's public contract: GRPOTrainer's call signature, clear config errors, a warning for a missing context
column, and non-finite log-probs kept out of the SDAR term and its metrics."""

import inspect
import logging

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOTrainer

from trl_sdar import SDARConfig, SDARTrainer

FAST = {
    "use_cpu": True,
    "bf16": False,
    "report_to": "none",
    "save_strategy": "no",
    "num_generations": 2,
    "per_device_train_batch_size": 4,
    "max_completion_length": 8,
    "gradient_checkpointing": False,
    "logging_steps": 1,
    "seed": 7,
}


def length_reward(completions, **kwargs):
    return [float(len(c[0]["content"]) % 5) for c in completions]


def _dataset(column="privileged_context", n=4):
    rows = [{"prompt": [{"role": "user", "content": f"task {i}"}], column: "skills: rinse first"} for i in range(n)]
    return Dataset.from_list(rows)


def test_signature_is_grpo_trainers_parameter_for_parameter():
    ours = inspect.signature(SDARTrainer.__init__).parameters
    theirs = inspect.signature(GRPOTrainer.__init__).parameters
    assert list(ours) == list(theirs)
    for name, param in theirs.items():
        assert (ours[name].kind, ours[name].default) == (param.kind, param.default), name


def test_positional_arguments_mean_what_they_mean_for_grpo(tiny_model_dir, tmp_path):
    args = SDARConfig(output_dir=str(tmp_path), **FAST)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    dataset = _dataset()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trainer = SDARTrainer(model, length_reward, args, dataset, None, tokenizer)
    assert trainer.train_dataset is dataset and trainer.processing_class is tokenizer and trainer.teacher is not None


@pytest.mark.parametrize(
    "values, message",
    [
        ({"sdar_coef": 0.0, "rl_loss_coef": 0.5}, "rl_loss_coef=0.5 has no effect with sdar_coef=0.0"),
        ({"distill_loss_type": "rlsd", "rl_loss_coef": 0.0}, "trains on a zero loss"),
        ({"distill_loss_type": "naive", "sdar_coef": 0.0}, "distill_loss_type='naive' has no effect"),
    ],
)
def test_combinations_that_silently_mean_something_else_are_rejected(values, message):
    with pytest.raises(ValueError, match=message):
        SDARConfig(output_dir="unused", **FAST, **values)


def test_meaningful_combinations_still_pass():
    SDARConfig(output_dir="unused", **FAST, sdar_coef=0.0)  # plain GRPO
    SDARConfig(output_dir="unused", **FAST, sdar_coef=1.0, rl_loss_coef=0.0)  # OPSD baseline
    SDARConfig(output_dir="unused", **FAST, sdar_coef=0.0, distill_loss_type="rlsd", rl_loss_coef=2.0)


def _batch(trainer, n=4):
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    rows = [dict(trainer.train_dataset[i // 2]) for i in range(n)]
    return trainer._generate_and_score_completions(rows)


def _trainer(tiny_model_dir, tmp_path, dataset, **overrides):
    args = SDARConfig(output_dir=str(tmp_path), **{**FAST, **overrides})
    return SDARTrainer(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        length_reward,
        args=args,
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
    )


def test_missing_context_column_warns_once_naming_it(tiny_model_dir, tmp_path, caplog):
    trainer = _trainer(tiny_model_dir, tmp_path, _dataset(column="skill_text"))
    with caplog.at_level(logging.WARNING, logger="trl_sdar.method.trainer"):
        inputs = _batch(trainer)
        _batch(trainer)
    warnings = [r.getMessage() for r in caplog.records if "plain GRPO" in r.getMessage()]
    assert len(warnings) == 1 and "'privileged_context'" in warnings[0] and "skill_text" in warnings[0]
    assert inputs["sdar_row_mask"].sum() == 0


def test_rows_with_none_context_do_not_warn(tiny_model_dir, tmp_path, caplog):
    rows = [{"prompt": [{"role": "user", "content": f"task {i}"}], "privileged_context": None} for i in range(4)]
    trainer = _trainer(tiny_model_dir, tmp_path, Dataset.from_list(rows))
    with caplog.at_level(logging.WARNING, logger="trl_sdar.method.trainer"):
        _batch(trainer)
    assert "plain GRPO" not in caplog.text


def test_nonfinite_log_probs_are_counted_and_kept_out_of_the_update_and_metrics(tiny_model_dir, tmp_path):
    from trl_sdar.method.losses import aggregate_like_grpo, sdar_per_token_loss

    trainer = _trainer(tiny_model_dir, tmp_path, _dataset(), sdar_coef=1.0)
    inputs = _batch(trainer)
    mask = inputs["completion_mask"].bool()
    rows, cols = mask.nonzero(as_tuple=True)
    bad = [(int(rows[0]), int(cols[0])), (int(rows[-1]), int(cols[-1]))]
    teacher = inputs["teacher_per_token_logps"].clone()
    teacher[bad[0]], teacher[bad[1]] = float("nan"), float("-inf")
    inputs["teacher_per_token_logps"] = teacher
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    metrics = trainer._metrics["train"]
    assert metrics["sdar/nonfinite_tokens"][-1] == 2
    # the metrics and the term are those of the other tokens only
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    with torch.no_grad():
        student, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, attention, inputs["completion_ids"].size(1)
        )
    keep = inputs["completion_mask"].clone()
    for r, c in bad:
        keep[r, c] = 0
    clean = torch.where(keep.bool(), teacher, student)
    per_token, gate, gap = sdar_per_token_loss(student, clean, gate_beta=5.0)
    keep = keep * inputs["sdar_row_mask"].unsqueeze(1)
    assert metrics["sdar/distilled_tokens"][-1] == keep.sum().item()
    assert metrics["sdar/gate_mean"][-1] == pytest.approx(((gate * keep).sum() / keep.sum()).item(), rel=1e-5)
    assert metrics["sdar/teacher_gap_mean"][-1] == pytest.approx(((gap * keep).sum() / keep.sum()).item(), rel=1e-5)
    expected = aggregate_like_grpo(per_token * keep, keep, "dapo", num_items_in_batch=inputs["num_items_in_batch"],
                                   steps_per_generation=trainer.args.steps_per_generation)  # fmt: skip
    assert metrics["sdar/loss"][-1] == pytest.approx(((per_token * keep).sum() / keep.sum()).item(), rel=1e-5)
    assert expected.abs().item() > 0


def test_rlsd_advantages_ignore_nonfinite_teacher_tokens(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, _dataset(), distill_loss_type="rlsd", sdar_coef=0.0)
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    original = trainer._teacher_logps

    def poisoned(inputs, batch_size=None):
        logps = original(inputs, batch_size=batch_size)
        logps[:, 0] = float("nan")
        return logps

    trainer._teacher_logps = poisoned
    inputs = trainer._generate_and_score_completions([dict(trainer.train_dataset[i // 2]) for i in range(4)])
    advantages = inputs["advantages"]
    assert advantages.dim() == 2 and torch.isfinite(advantages).all()
