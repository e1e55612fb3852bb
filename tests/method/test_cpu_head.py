"""The compact CPU fused head: same log-probs and gradients as TRL's full projection, on the labelled rows only."""

import pytest
import torch
from transformers import AutoModelForCausalLM
from trl.trainer import utils as trl_utils
from trl.trainer.utils import add_fused_lm_head

from trl_sdar.method.cpu_head import ENV_SWITCH, enable_compact_cpu_head


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

    original = getattr(trl_utils._use_triton, "original", trl_utils._use_triton)  # TRL's own, even if patched earlier
    monkeypatch.setattr(
        trl_utils, "_use_triton", original
    )  # unpatched for the reference pass; restored after the test
    full, full_grads = _fused_logps(model, ids, labels)

    projected = []
    real_apply = trl_utils._ChunkedLogProbFunction.apply

    def counting_apply(hidden, *rest):
        projected.append(hidden.shape[0])
        return real_apply(hidden, *rest)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", counting_apply)
    assert enable_compact_cpu_head() is True
    assert enable_compact_cpu_head() is True  # idempotent: wraps once
    assert trl_utils._use_triton.original is original
    compact, compact_grads = _fused_logps(model, ids, labels)

    assert projected == [int((labels[:, 1:] != -100).sum())] == [6]  # 4 + 2 labelled next tokens, not 2 × 11
    torch.testing.assert_close(compact, full, atol=1e-6, rtol=0)
    assert (compact[labels[:, 1:] == -100] == 0).all()
    assert full_grads.keys() == compact_grads.keys()
    for name, grad in full_grads.items():
        torch.testing.assert_close(compact_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_switch_keeps_trl_behaviour(monkeypatch):
    original = trl_utils._use_triton
    monkeypatch.setattr(trl_utils, "_use_triton", getattr(original, "original", original))
    monkeypatch.setenv(ENV_SWITCH, "0")
    assert enable_compact_cpu_head() is False
    assert trl_utils._use_triton(torch.device("cpu")) is False


def test_missing_trl_name_is_a_clear_error(monkeypatch):
    monkeypatch.delattr(trl_utils, "_use_triton")
    with pytest.raises(RuntimeError, match="_use_triton is gone"):
        enable_compact_cpu_head()
