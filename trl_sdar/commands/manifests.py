"""Pinned task lists: a JSON file, or the name of one shipped in `trl_sdar/manifests/`."""

from __future__ import annotations

import json
from pathlib import Path

MANIFEST_DIR = Path(__file__).resolve().parent.parent / "manifests"


def load_manifest(name_or_path: str) -> dict:
    """A task manifest from a JSON path or a shipped name (trl_sdar/manifests/<name>.json)."""
    path = Path(name_or_path)
    if not path.exists():
        path = MANIFEST_DIR / f"{name_or_path}.json"
    if not path.exists():
        shipped = sorted(p.stem for p in (MANIFEST_DIR).glob("*.json"))
        raise ValueError(f"--manifest {name_or_path!r} is neither a file nor one of {shipped}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"manifest {path} is not valid JSON ({error})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"manifest {path} must be a JSON object with 'env_name' and 'task_ids'")
    missing = {"env_name", "task_ids"} - manifest.keys()
    if missing:
        raise ValueError(f"manifest {path} lacks {sorted(missing)}")
    ids = manifest["task_ids"]
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and i >= 0 for i in ids):
        raise ValueError(f"manifest {path}: 'task_ids' must be a non-empty list of integers >= 0")
    return manifest
