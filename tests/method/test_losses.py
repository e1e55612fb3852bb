import math

import pytest
import torch

from trl_sdar.method.losses import (
    aggregate_like_grpo,
    gate_statistics,
    naive_opsd_per_token_loss,
    sdar_distillation_loss,
    sdar_per_token_loss,
)


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_sdar_loss_hand_computed_values_and_gradients():
    # s = student log-probs, u = teacher log-probs; third token masked out.
    s = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    u = torch.tensor([[-0.8, -2.5, -3.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    # Δ = u − s = [0.2, −0.5, (−2.5 masked)];  β = 5  →  g = [σ(1), σ(−2.5)]
    g1, g2 = _sigmoid(1.0), _sigmoid(-2.5)  # 0.7310586, 0.0758582
    # loss = mean over 2 trained tokens of g·(u − s) = (0.7310586·0.2 + 0.0758582·(−0.5)) / 2 = 0.0541413
    loss, metrics = sdar_distillation_loss(s, u, mask, gate_beta=5.0)
    assert loss.item() == pytest.approx((g1 * 0.2 - g2 * 0.5) / 2, abs=1e-6)
    assert loss.item() == pytest.approx(0.0541413, abs=1e-6)
    assert metrics["gate_mean"] == pytest.approx((g1 + g2) / 2, abs=1e-6)
    assert metrics["gate_active_ratio"] == pytest.approx(0.5)
    assert metrics["teacher_gap_mean"] == pytest.approx(-0.15, abs=1e-6)
    assert all(isinstance(v, float) for v in metrics.values())
    loss.backward()
    # ∂loss/∂s_t = −g_t / N on trained tokens (the gate is detached), 0 on masked ones
    assert torch.allclose(s.grad, torch.tensor([[-g1 / 2, -g2 / 2, 0.0]]), atol=1e-6)


def test_gradient_flows_only_through_student():
    s = torch.tensor([[-1.0, -0.3]], requires_grad=True)
    u = torch.tensor([[-0.2, -0.9]], requires_grad=True)
    loss, _ = sdar_distillation_loss(s, u, torch.ones(1, 2), gate_beta=5.0)
    loss.backward()
    assert u.grad is None or torch.count_nonzero(u.grad) == 0
    assert torch.all(s.grad < 0)  # every sampled token is pushed up, never down


def test_gate_limits():
    s = torch.tensor([[-1.0, -1.0, -1.0]])
    u = torch.tensor([[-0.5, -1.0, -1.5]])  # Δ = [+0.5, 0, −0.5]
    _, gate, _ = sdar_per_token_loss(s, u, gate_beta=0.0)
    assert torch.allclose(gate, torch.full_like(gate, 0.5))  # β = 0: constant 0.5 (reference "naive")
    _, gate, _ = sdar_per_token_loss(s, u, gate_beta=1e4)
    assert torch.allclose(gate, torch.tensor([[1.0, 0.5, 0.0]]))  # β → ∞: a step at Δ = 0
    _, gate, gap = sdar_per_token_loss(s, u, gate_beta=5.0)
    assert torch.all((gate > 0) & (gate < 1)) and torch.allclose(gap, torch.tensor([[0.5, 0.0, -0.5]]))


def test_masked_tokens_do_not_change_loss_or_metrics():
    s = torch.tensor([[-1.0, -2.0, -0.5, -0.1]])
    u = torch.tensor([[-0.8, -2.5, -3.0, -0.1]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    u2 = u.clone()
    u2[0, 2:] = torch.tensor([5.0, -40.0])
    a, ma = sdar_distillation_loss(s, u, mask, gate_beta=5.0)
    b, mb = sdar_distillation_loss(s, u2, mask, gate_beta=5.0)
    assert a.item() == pytest.approx(b.item()) and ma == mb


def test_empty_mask_gives_zero_not_nan():
    loss, metrics = sdar_distillation_loss(torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2, 3), gate_beta=5.0)
    assert loss.item() == 0.0 and metrics["gate_mean"] == 0.0


def test_naive_variant_pushes_rejected_tokens_down():
    s = torch.tensor([[-1.0, -1.0]], requires_grad=True)
    u = torch.tensor([[-0.5, -1.5]])  # Δ = [+0.5, −0.5]
    per_token, gate, gap = naive_opsd_per_token_loss(s, u)
    per_token.sum().backward()
    assert torch.allclose(s.grad, torch.tensor([[-0.5, 0.5]]))  # −Δ: endorsed up, rejected down
    assert torch.all(gate == 1.0)
    assert gate_statistics(gate, gap, torch.ones(1, 2))["teacher_gap_mean"] == pytest.approx(0.0)


@pytest.mark.parametrize(
    "loss_type, kwargs, expected",
    [
        # per_token = [[1, 2], [3, 4]], mask = [[1, 1], [1, 0]]
        ("grpo", {"gradient_accumulation_steps": 2}, ((1 + 2) / 2 + 3 / 1) / 2 / 2),  # seq means, batch mean, /GA
        ("bnpo", {"gradient_accumulation_steps": 2}, (1 + 2 + 3) / 3 / 2),
        ("dr_grpo", {"max_completion_length": 4}, (1 + 2 + 3) / (2 * 4)),
        # dapo: sum / (global tokens / processes · GA / steps_per_generation) = 6 / (12 / 2 · 2 / 4) = 2
        (
            "dapo",
            {
                "num_items_in_batch": torch.tensor(12.0),
                "num_processes": 2,
                "gradient_accumulation_steps": 2,
                "steps_per_generation": 4,
            },
            6 / 3,
        ),
        ("dapo", {"num_items_in_batch": torch.tensor(12.0), "num_processes": 2, "training": False}, 6 / 6),
        ("luspo", {}, ((1 + 2) + 3) / 2),
    ],
)
def test_aggregate_like_grpo_matches_trl_normalisers(loss_type, kwargs, expected):
    per_token = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    assert aggregate_like_grpo(per_token, mask, loss_type, **kwargs).item() == pytest.approx(expected)


def test_aggregate_rejects_unknown_loss_type():
    with pytest.raises(ValueError, match="nope"):
        aggregate_like_grpo(torch.ones(1, 1), torch.ones(1, 1), "nope")


def test_skill_sd_k3_and_ratio_hand_computed():
    from trl_sdar.method.losses import skill_sd_per_token_loss

    s = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    u = torch.tensor([[-1.5, -2.0]])
    old = torch.tensor([[-1.0, -2.5]])
    per_token, gate, gap = skill_sd_per_token_loss(s, u, old)
    # token 1: ℓ = 0.5, k3 = e^−0.5 − 1 + 0.5 = 0.1065307, ρ = e^0 = 1
    # token 2: ℓ = 0,   k3 = 0,                            ρ = e^0.5
    assert torch.allclose(per_token, torch.tensor([[math.exp(-0.5) - 0.5, 0.0]]), atol=1e-6)
    assert torch.all(gate == 1) and torch.allclose(gap, torch.tensor([[-0.5, 0.0]]))
    per_token.sum().backward()
    # d/ds [ρ·k3] = ρ·k3 + ρ·(1 − e^−ℓ): token 1 = 0.1065307 + (1 − 0.6065307) = 0.5; token 2 = 0 + e^0.5·0 = 0
    assert torch.allclose(s.grad, torch.tensor([[0.5, 0.0]]), atol=1e-6)
    big = skill_sd_per_token_loss(torch.tensor([[30.0]]), torch.tensor([[29.0]]), torch.tensor([[0.0]]))[0]
    assert big.item() == pytest.approx(math.exp(10.0) * (math.exp(-1.0) - 1 + 1.0), rel=1e-5)  # ρ capped at e^10


def test_rlsd_advantages_and_schedule():
    from trl_sdar.method.losses import rlsd_advantages, rlsd_lambda

    assert rlsd_lambda(0) == 0.5 and rlsd_lambda(50) == pytest.approx(0.25) and rlsd_lambda(100) == 0.0
    assert rlsd_lambda(150) == 0.0
    adv = torch.tensor([2.0, -1.0])
    u = torch.tensor([[-1.0, -3.0], [-1.0, -1.0]])
    s = torch.tensor([[-1.1, -1.0], [-1.5, -1.0]])
    out = rlsd_advantages(adv, u, s, lam=0.5)
    # row 0 (A>0): Δ = [0.1, −2] → w = [e^0.1 = 1.10517, clip(e^−2) = 0.8]
    # row 1 (A<0): Δ = [0.5, 0]  → w = [clip(e^−0.5) = 0.8, 1]
    expected = torch.tensor([[2 * (0.5 + 0.5 * math.exp(0.1)), 2 * (0.5 + 0.4)], [-1 * (0.5 + 0.4), -1.0]])
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(rlsd_advantages(adv, u, s, lam=0.0), adv.unsqueeze(1).expand(2, 2))
