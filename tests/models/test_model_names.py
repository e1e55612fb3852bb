"""Model names: a misspelled built-in name lists the built-in models, an adapter folder is named as one where a full
model is needed, and `SDARTrainer` takes the built-in names as every command does."""

import json

import pytest

from trl_sdar.models import BUILTIN_MODELS, resolve_model_path


def test_misspelled_builtin_name_lists_the_builtin_models(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError) as err:
        resolve_model_path("builtin:tiney")
    message = str(err.value)
    assert "'builtin:tiney' is not a built-in model" in message and "Did you mean builtin:tiny?" in message
    assert all(name in message for name in BUILTIN_MODELS) and "huggingface-cli" not in message


def test_adapter_folder_is_refused_where_a_full_model_is_needed(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/models/base"}))
    assert resolve_model_path(str(adapter)) == str(adapter)  # eval loads adapters
    with pytest.raises(ValueError) as err:
        resolve_model_path(str(adapter), full_model=True)
    message = str(err.value)
    assert "is a LoRA adapter folder" in message and "'/models/base'" in message and "merge_and_unload" in message


def test_sdar_trainer_takes_a_builtin_name(tmp_path, monkeypatch):
    from datasets import Dataset

    from trl_sdar import SDARConfig, SDARTrainer

    monkeypatch.setenv("TRL_SDAR_CACHE", str(tmp_path / "cache"))
    args = SDARConfig(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, report_to="none",
                      num_generations=2, per_device_train_batch_size=2, max_completion_length=4)  # fmt: skip
    dataset = Dataset.from_list([{"prompt": "hi"}])
    trainer = SDARTrainer("builtin:tiny", lambda completions, **kw: [0.0] * len(completions), args=args,
                          train_dataset=dataset)  # fmt: skip
    assert trainer.model.config.model_type == "qwen2" and trainer.processing_class is not None
