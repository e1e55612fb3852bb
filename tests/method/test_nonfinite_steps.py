"""A step with NaN/inf gradients is skipped (weights and optimizer moments kept, counted in a metric); with
rl_loss_coef 0 the GRPO term cannot bring NaN into the loss."""

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import GRPOTrainer

from trl_sdar import SDARConfig, SDARTrainer
from trl_sdar.method.nonfinite_steps import METRIC, gradients_finite


class Snapshots(TrainerCallback):
    """The parameters after each optimizer step."""

    def __init__(self, model, into):
        self.model, self.into = model, into

    def on_step_end(self, args, state, control, **kwargs):
        self.into.append([p.detach().clone() for p in self.model.parameters()])


def _trainer(tiny_model_dir, tmp_path, **overrides):
    rows = [{"prompt": [{"role": "user", "content": f"task {i}"}], "privileged_context": "rinse it"} for i in range(8)]
    config = dict(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                  num_generations=2, per_device_train_batch_size=4, max_completion_length=8, logging_steps=1,
                  gradient_checkpointing=False, learning_rate=1e-2, seed=7)  # fmt: skip
    return SDARTrainer(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        lambda completions, **kw: [float(len(c[0]["content"]) % 5) for c in completions],
        args=SDARConfig(**{**config, **overrides}),
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
    )


def test_a_step_with_nan_gradients_is_skipped_and_the_next_one_trains(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, max_steps=2)
    weight = trainer.model.get_output_embeddings().weight
    calls = []
    weight.register_hook(lambda grad: calls.append(1) or (grad * float("nan") if len(calls) == 1 else grad))
    snapshots = []
    trainer.add_callback(Snapshots(trainer.model, snapshots))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert all(a.equal(b) for a, b in zip(before, snapshots[0], strict=True))  # step 1: nothing moved
    assert any(not a.equal(b) for a, b in zip(snapshots[0], snapshots[1], strict=True))  # step 2 trained
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert [h[METRIC] for h in logs] == [1.0, 0.0]


def test_gradients_finite_sees_nan_and_inf():
    layer = torch.nn.Linear(2, 2)
    assert gradients_finite(layer)  # no gradients yet
    layer(torch.ones(1, 2)).sum().backward()
    assert gradients_finite(layer)
    layer.bias.grad[0] = float("inf")
    assert not gradients_finite(layer)


def test_opsd_loss_stays_finite_when_the_grpo_term_is_nan(tiny_model_dir, tmp_path, monkeypatch):
    trainer = _trainer(tiny_model_dir, tmp_path, sdar_coef=1.0, rl_loss_coef=0.0)
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    inputs = trainer._generate_and_score_completions([dict(trainer.train_dataset[i // 2]) for i in range(4)])
    grpo = GRPOTrainer._compute_loss
    monkeypatch.setattr(
        GRPOTrainer, "_compute_loss", lambda self, model, batch: grpo(self, model, batch) * float("nan")
    )
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() != 0.0
    assert gradients_finite(trainer.model)
