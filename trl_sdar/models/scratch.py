"""`builtin:scratch`: a small, randomly initialised Llama that speaks through SmolLM2-135M-Instruct's tokenizer.

Made for studies that must fit a CPU: it knows nothing until `trl-sdar sft` teaches it the agent format and a first
policy from the built-in worlds' expert demonstrations, and RL then starts from that warm start. It keeps
SmolLM2's tokenizer and chat template (same ids, same end-of-turn token, same prompts as SmolLM2 runs), its
architecture family (Llama, tied embeddings) and its special-token ids; only the body is small:

    hidden 256, 4 layers, 4 heads of 64 (no grouped keys/values), MLP 1024: 3.1M body + 12.6M embedding parameters

so a training token costs about 0.1 GFLOP against SmolLM2-135M's 0.8, and most of that is the 49,152-way output
layer, which RL only evaluates on completion tokens. The weights are drawn from a fixed seed (`SCRATCH_SEED`):
every machine builds the same starting model. Folder: `<cache_dir>/models/scratch-llama-4x256`, written atomically
next to the SmolLM2 folder it takes the tokenizer from.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

SCRATCH_NAME = "scratch-llama-4x256"
SCRATCH_SEED = 0
SCRATCH_SHAPE = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
                 "head_dim": 64, "intermediate_size": 1024}  # fmt: skip


def scratch_config(source_config):
    """The scratch model's `LlamaConfig`: SmolLM2's vocabulary, special ids and RoPE, with the small body."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=source_config.vocab_size,
        max_position_embeddings=source_config.max_position_embeddings,
        bos_token_id=source_config.bos_token_id,
        eos_token_id=source_config.eos_token_id,
        pad_token_id=source_config.pad_token_id,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        rope_theta=getattr(source_config, "rope_theta", None) or 100000.0,
        initializer_range=0.02,
        **SCRATCH_SHAPE,
    )


def build_scratch_model(folder: Path, source_dir: Path, seed: int = SCRATCH_SEED) -> Path:
    """Write the randomly initialised model and SmolLM2's tokenizer into `folder` (atomically); returns it."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(source_dir)
    config = scratch_config(AutoConfig.from_pretrained(source_dir))
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if not folder.exists():
            tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def scratch_model_dir(cache_dir: str | Path | None = None) -> Path:
    """Folder of the scratch model (built on first use from the cached SmolLM2 tokenizer, a few seconds)."""
    from trl_sdar.models.smollm2 import default_cache_dir, smollm2_model_dir

    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = root / "models" / SCRATCH_NAME
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    return build_scratch_model(folder, smollm2_model_dir(root))
