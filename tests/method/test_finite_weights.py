"""A model whose weights are not finite is never saved: neither the final model nor a checkpoint."""

import pytest
import torch
from datasets import Dataset

from trl_sdar import SDARConfig, SDARTrainer
from trl_sdar.method.finite_weights import NonFiniteWeightsError, first_nonfinite_log, nonfinite_parameters


def _reward(completions, **kwargs):
    return [1.0 for _ in completions]


@pytest.fixture
def trainer(tiny_model_dir, tmp_path):
    args = SDARConfig(
        output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, report_to="none", save_strategy="no",
        num_generations=2, per_device_train_batch_size=2, max_completion_length=4, max_steps=1, logging_steps=1,
    )  # fmt: skip
    dataset = Dataset.from_list([{"prompt": "hi"}, {"prompt": "yo"}])
    return SDARTrainer(tiny_model_dir, _reward, args=args, train_dataset=dataset)


def test_save_model_refuses_nan_weights_and_names_the_step(trainer, tmp_path):
    trainer.save_model(str(tmp_path / "good"))  # finite weights save as usual
    assert (tmp_path / "good" / "model.safetensors").exists()
    name, param = next(iter(trainer.model.named_parameters()))
    with torch.no_grad():
        param.view(-1)[0] = float("nan")
    trainer.state.global_step = 7
    trainer.state.log_history = [{"loss": 0.1, "grad_norm": 1.0, "step": 6}, {"loss": 0.2, "grad_norm": float("inf"),
                                 "step": 7}]  # fmt: skip
    with pytest.raises(NonFiniteWeightsError) as err:
        trainer.save_model(str(tmp_path / "bad"))
    message = str(err.value)
    assert "at step 7" in message and name in message and "grad_norm was inf at step 7" in message
    assert "\n" not in message
    assert not (tmp_path / "bad" / "model.safetensors").exists()


def test_nonfinite_parameters_and_first_nonfinite_log():
    layer = torch.nn.Linear(2, 2)
    assert nonfinite_parameters(layer) == []
    with torch.no_grad():
        layer.bias[1] = float("-inf")
    assert nonfinite_parameters(layer) == ["bias"]
    assert first_nonfinite_log([{"loss": 1.0, "step": 1}]) is None
    assert first_nonfinite_log([{"loss": float("nan"), "step": 2}]) == "loss was nan at step 2"
