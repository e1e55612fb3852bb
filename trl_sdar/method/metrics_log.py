"""Metrics appended to `<output_dir>/metrics.jsonl` as they are logged, so a killed run keeps its curves.

One JSON object per line, the same dict the Trainer puts in `state.log_history` (its metrics, `epoch`, `step`). The
file is appended and flushed after every log, on the main process only. A resumed run appends again from the
checkpoint's step, so the file then holds the steps after the checkpoint twice; `read_metrics_jsonl` keeps the
newest run's entries (a step that goes back discards the later steps written before it), which is what
`trl-sdar plot` reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

METRICS_FILE = "metrics.jsonl"


class MetricsJSONLCallback(TrainerCallback):
    """Appends every `Trainer.log` call to `<args.output_dir>/metrics.jsonl` (main process only)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        path = Path(args.output_dir) / METRICS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {**logs, "step": state.global_step}
        with path.open("a") as handle:
            handle.write(json.dumps(entry, default=_jsonable) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # a 0-d tensor or numpy scalar that slipped into the logs
        return value.item()
    return str(value)


def read_metrics_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Entries of a metrics file in order, the last (newest) run's entries for any step written twice.

    A line cut short by a kill (the last one) is skipped; any other malformed line raises `ValueError` naming it.
    """
    path = Path(path)
    lines = path.read_text().splitlines()
    entries: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                break  # the process died while writing its last line
            raise ValueError(f"{path}:{number} is not a JSON object ({error})") from None
        if not isinstance(entry, dict):
            raise ValueError(f"{path}:{number} is not a JSON object, got {type(entry).__name__}")
        step = entry.get("step")
        if isinstance(step, int) and _is_step_log(entry):
            # A resumed run starts again after its checkpoint: drop what the interrupted run logged from there on.
            entries = [e for e in entries if not (_is_step_log(e) and e.get("step", -1) >= step)]
        entries.append(entry)
    return entries


def _is_step_log(entry: dict[str, Any]) -> bool:
    """A per-step training log (not eval metrics, not the end-of-training summary)."""
    keys = [k for k in entry if k not in ("step", "epoch")]
    return bool(keys) and not any(k.startswith(("eval_", "test_", "train_")) for k in keys)
