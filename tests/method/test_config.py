import pytest

from trl_sdar import SDARConfig

BASE = {"output_dir": "unused", "use_cpu": True, "bf16": False, "report_to": "none"}


def test_defaults_are_grpo_defaults_plus_paper_values():
    from trl import GRPOConfig

    sdar, grpo = SDARConfig(**BASE), GRPOConfig(**BASE)
    assert sdar.sdar_coef == 0.01 and sdar.sdar_gate_beta == 5.0
    assert sdar.teacher_model_kind == "live" and sdar.teacher_context_column == "privileged_context"
    for name in ("loss_type", "beta", "learning_rate", "num_generations", "temperature", "epsilon", "entropy_coef"):
        assert getattr(sdar, name) == getattr(grpo, name), name


@pytest.mark.parametrize(
    "field, value, valid",
    [
        ("sdar_coef", -0.1, ">= 0"),
        ("sdar_coef", float("nan"), "finite number"),
        ("sdar_gate_beta", -1.0, ">= 0"),
        ("teacher_model_kind", "frozen", "'live', 'base', 'ema'"),
        ("teacher_context_placement", "suffix", "'prefix', 'system'"),
        ("distill_loss_type", "kl", "'sdar', 'naive'"),
        ("teacher_update_rate", 0.0, "0 < rate <= 1"),
        ("teacher_update_rate", 1.5, "0 < rate <= 1"),
        ("teacher_max_prompt_length", 1, "integer >= 2"),
        ("teacher_context_column", "", "column name"),
    ],
)
def test_invalid_values_name_field_value_and_valid_range(field, value, valid):
    with pytest.raises(ValueError) as err:
        SDARConfig(**BASE, **{field: value})
    message = str(err.value)
    assert f"SDARConfig.{field}=" in message and valid in message


@pytest.mark.parametrize(
    "field, value",
    [
        ("sdar_coef", float("inf")),
        ("sdar_gate_beta", float("inf")),
        ("rl_loss_coef", float("inf")),
        ("learning_rate", float("nan")),
        ("beta", float("inf")),
        ("temperature", float("-inf")),
        ("max_grad_norm", float("nan")),
        ("reward_weights", [1.0, float("inf")]),
    ],
)
def test_non_finite_floats_are_refused_in_every_field(field, value):
    with pytest.raises(ValueError) as err:
        SDARConfig(**BASE, **{field: value})
    message = str(err.value)
    assert f"SDARConfig.{field}=" in message and "finite" in message and "\n" not in message


@pytest.mark.parametrize(
    "field, value, valid",
    [
        ("num_generations", 0, "integer >= 2"),
        ("max_steps", 0, "-1 (train for num_train_epochs) or an integer >= 1"),
        ("learning_rate", -1.0, "a number >= 0"),
    ],
)
def test_values_that_crash_or_mislead_later_are_refused_here(field, value, valid):
    with pytest.raises(ValueError) as err:  # not ZeroDivisionError from GRPOConfig, not one silent training step
        SDARConfig(**BASE, **{field: value})
    message = str(err.value)
    assert f"SDARConfig.{field}={value!r} is not valid" in message and valid in message
