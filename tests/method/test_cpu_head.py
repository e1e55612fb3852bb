"""The compact CPU fused head: same log-probs and gradients as TRL's full projection, on the labelled rows only."""

import pytest
import torch
from transformers import AutoModelForCausalLM
from trl.trainer import utils as trl_utils
from trl.trainer.utils import add_fused_lm_head

from trl_sdar.method.cpu_head import ENV_SWITCH, compact_cpu_head


def _fused_logps(model, ids, labels):
    model.zero_grad()
    out = model(input_ids=ids, labels=labels, fused_lm_head=True)
    out.log_probs.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.log_probs.detach(), grads


def test_compact_cpu_head_matches_full_projection(tiny_model_dir, monkeypatch):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    ids = torch.randint(3, model.config.vocab_size, (2, 12))
    labels = ids.clone()
    labels[:, :8] = -100  # a prompt: only the last 4 tokens are scored
    labels[1, 10:] = -100  # and a padded row

    original = trl_utils._use_triton  # TRL's own: nothing outside a `with compact_cpu_head()` changes it
    full, full_grads = _fused_logps(model, ids, labels)

    projected = []
    real_apply = trl_utils._ChunkedLogProbFunction.apply

    def counting_apply(hidden, *rest):
        projected.append(hidden.shape[0])
        return real_apply(hidden, *rest)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", counting_apply)
    with compact_cpu_head() as on:
        with compact_cpu_head() as nested:  # nested: wraps once, and the inner exit keeps the outer patch
            assert on and nested and trl_utils._use_triton.original is original
        assert trl_utils._use_triton.original is original
        compact, compact_grads = _fused_logps(model, ids, labels)
    assert trl_utils._use_triton is original  # restored on exit

    assert projected == [int((labels[:, 1:] != -100).sum())] == [6]  # 4 + 2 labelled next tokens, not 2 × 11
    torch.testing.assert_close(compact, full, atol=1e-6, rtol=0)
    assert (compact[labels[:, 1:] == -100] == 0).all()
    assert full_grads.keys() == compact_grads.keys()
    for name, grad in full_grads.items():
        torch.testing.assert_close(compact_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_switch_keeps_trl_behaviour(monkeypatch):
    monkeypatch.setenv(ENV_SWITCH, "0")
    with compact_cpu_head() as on:
        assert on is False and trl_utils._use_triton(torch.device("cpu")) is False


def test_missing_trl_name_is_a_clear_error(monkeypatch):
    monkeypatch.delattr(trl_utils, "_use_triton")
    with pytest.raises(RuntimeError, match="_use_triton is gone"), compact_cpu_head():
        pass


def test_trainer_scores_compactly_and_leaves_trl_as_it_was(tiny_model_dir, tmp_path, monkeypatch):
    from datasets import Dataset
    from transformers import AutoTokenizer

    from trl_sdar import SDARConfig, SDARTrainer

    original = trl_utils._use_triton
    compact = []
    real_apply = trl_utils._ChunkedLogProbFunction.apply
    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", lambda hidden, *rest: compact.append(
        getattr(trl_utils._use_triton, "original", None) is original) or real_apply(hidden, *rest))  # fmt: skip
    rows = [{"prompt": [{"role": "user", "content": f"task {i}"}], "privileged_context": "hint"} for i in range(4)]
    config = SDARConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                        num_generations=2, per_device_train_batch_size=2, max_completion_length=6, max_steps=1,
                        gradient_checkpointing=False)  # fmt: skip
    trainer = SDARTrainer(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lambda completions, **k: [0.0] * len(
        completions), args=config, train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))  # fmt: skip
    assert trl_utils._use_triton is original  # building the trainer changes nothing in TRL
    trainer.train()
    assert compact and all(compact)  # student and teacher scoring: compact, every time
    assert trl_utils._use_triton is original  # and TRL is as it was afterwards
