"""builtin:scratch: a small random-init Llama with the source model's tokenizer, the same on every build."""

import shutil

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from trl_sdar.models import resolve_model_path
from trl_sdar.models.scratch import SCRATCH_NAME, SCRATCH_SHAPE, build_scratch_model
from trl_sdar.models.smollm2 import CACHE_ENV, MODEL_NAME


def test_build_keeps_tokenizer_and_ids_and_is_deterministic(tiny_model_dir, tmp_path):
    first = build_scratch_model(tmp_path / "a", source_dir=tiny_model_dir)
    second = build_scratch_model(tmp_path / "b", source_dir=tiny_model_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temporary folder left behind
    source = AutoConfig.from_pretrained(tiny_model_dir)
    config = AutoConfig.from_pretrained(first)
    assert config.model_type == "llama" and config.tie_word_embeddings
    assert (config.vocab_size, config.eos_token_id, config.bos_token_id) == (
        source.vocab_size, source.eos_token_id, source.bos_token_id)  # fmt: skip
    assert {k: getattr(config, k) for k in SCRATCH_SHAPE} == SCRATCH_SHAPE

    source_tok, tok = AutoTokenizer.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(first)
    messages = [{"role": "user", "content": "go to cabinet 1"}]
    assert tok.apply_chat_template(messages, tokenize=True) == source_tok.apply_chat_template(messages, tokenize=True)

    a, b = AutoModelForCausalLM.from_pretrained(first), AutoModelForCausalLM.from_pretrained(second)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name
    body = sum(p.numel() for n, p in a.named_parameters() if "embed_tokens" not in n)
    # per layer: attention (4 x 256 x 256), MLP (3 x 256 x 1024), 2 norms; then the final norm
    assert body == 4 * (4 * 256 * 256 + 3 * 256 * 1024 + 2 * 256) + 256
    assert a.get_output_embeddings().weight.data_ptr() == a.get_input_embeddings().weight.data_ptr()  # tied


def test_builtin_alias_builds_once_into_the_cache(tiny_model_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    shutil.copytree(tiny_model_dir, cache / "models" / MODEL_NAME)  # stands in for the converted SmolLM2 folder
    monkeypatch.setenv(CACHE_ENV, str(cache))
    folder = resolve_model_path("builtin:scratch")
    assert folder == str(cache / "models" / SCRATCH_NAME)
    stamp = (cache / "models" / SCRATCH_NAME / "model.safetensors").stat().st_mtime_ns
    assert resolve_model_path("builtin:scratch") == folder
    assert (cache / "models" / SCRATCH_NAME / "model.safetensors").stat().st_mtime_ns == stamp  # not rebuilt
