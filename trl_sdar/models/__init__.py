"""Model folders by name: the built-in offline models (`builtin:tiny`, `builtin:smollm2`, `builtin:scratch`), local
folders, and hub ids (online only). Every command that takes a model name resolves it here."""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

BUILTIN_MODELS = ("builtin:tiny", "builtin:smollm2", "builtin:scratch")


def resolve_model_path(name: str | None, *, full_model: bool = False) -> str:
    """A local model folder for `model_name_or_path`: built-in aliases, local folders, or (online) a hub id.

    `full_model=True` (training starts from it) refuses a LoRA adapter folder, naming its base model.
    """
    if not name:
        raise ValueError(
            "model_name_or_path is required (a local folder, a hub id, or builtin:tiny|builtin:smollm2|"
            "builtin:scratch)."
        )
    if name.startswith("builtin:") and name not in BUILTIN_MODELS:
        close = difflib.get_close_matches(name, BUILTIN_MODELS, n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise ValueError(
            f"model_name_or_path={name!r} is not a built-in model; the built-in models are "
            f"{', '.join(BUILTIN_MODELS)}.{hint}"
        )
    if name == "builtin:tiny":
        from trl_sdar.models.smollm2 import default_cache_dir
        from trl_sdar.models.tiny import make_tiny_model_dir

        folder = default_cache_dir() / "models" / "tiny-qwen2"
        return str(folder if (folder / "config.json").exists() else make_tiny_model_dir(folder))
    if name == "builtin:smollm2":
        from trl_sdar.models.smollm2 import smollm2_model_dir

        return str(smollm2_model_dir())
    if name == "builtin:scratch":
        from trl_sdar.models.scratch import scratch_model_dir

        return str(scratch_model_dir())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise ValueError(f"model_name_or_path={name!r} is a folder without config.json: not a model folder.")
        if full_model and not (path / "config.json").exists():
            raise ValueError(_adapter_folder_message(name, path))
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ValueError(f"model_name_or_path={name!r} does not exist. Give an existing model folder.")
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise ValueError(
            f"model_name_or_path={name!r} is a hub id but HF_HUB_OFFLINE is set: download it where there is network "
            f"(`huggingface-cli download {name} --local-dir DIR`) and pass the folder, or use builtin:smollm2."
        )
    return name


def _adapter_folder_message(name: str, path: Path) -> str:
    """Why a LoRA adapter folder cannot start a training run, and the two ways forward."""
    try:
        base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, ValueError):
        base = None
    base_text = f"its base model is {base!r}" if base else "its adapter_config.json names no base model"
    return (
        f"model_name_or_path={name!r} is a LoRA adapter folder (adapter_config.json, no config.json), not a full "
        f"model; {base_text}. Train from the merged model (`trl-sdar sft` saves one with merge_adapter: true; in "
        "Python: PeftModel.from_pretrained(base, folder).merge_and_unload().save_pretrained(new_folder)), or from "
        "the base model."
    )
