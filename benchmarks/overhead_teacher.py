"""The teacher pass alone: one rollout batch scored shared-prefix and unshared in turn, with the time each way, the
tokens each reads and the largest difference of their log-probs (against the unshared pass's own rounding)."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

from harness import ratio, timed
from overhead_arms import build_trainer


def bench_teacher(trainer, batch: dict[str, Any], batch_size: int, repeats: int) -> dict[str, Any]:
    """The teacher pass on a rollout `batch`, shared-prefix and unshared in turn, `repeats` times each."""
    module = trainer.teacher.copy if trainer.teacher.copy is not None else trainer.model
    tokens = {"read": 0}
    hook = module.get_input_embeddings().register_forward_pre_hook(
        lambda m, a: tokens.__setitem__("read", tokens["read"] + a[0].numel())
    )
    times: dict[bool, list[float]] = {True: [], False: []}
    read: dict[bool, int] = {}
    logps: dict[bool, Any] = {}
    supported = trainer._share_teacher_prefix
    try:
        for _ in range(repeats):
            for share in (True, False) if supported else (False,):
                trainer._share_teacher_prefix, tokens["read"] = share, 0
                logps[share], seconds = timed(trainer._teacher_logps, batch, batch_size=batch_size)
                times[share].append(seconds)
                read[share] = tokens["read"]
    finally:
        hook.remove()
        trainer._share_teacher_prefix = supported
    if not supported:
        return {"supported": False, "unshared_s": statistics.median(times[False])}
    shared_s, unshared_s = statistics.median(times[True]), statistics.median(times[False])
    mask = batch["completion_mask"].bool()
    return {
        "supported": True,
        "rows": int(mask.size(0)),
        "teacher_prompt_tokens_mean": batch["teacher_prompt_mask"].sum(1).float().mean().item(),
        "shared_s": shared_s,
        "unshared_s": unshared_s,
        "speedup": ratio(unshared_s, shared_s),
        "tokens_read_shared": read[True],
        "tokens_read_unshared": read[False],
        "tokens_ratio": ratio(read[False], read[True]),
        "max_abs_logp_diff": (logps[True] - logps[False])[mask].abs().max().item(),
        "unshared_noise_floor": unshared_noise_floor(trainer, batch, logps[False], rows=2),
        "times": {"shared": times[True], "unshared": times[False]},
    }


def unshared_noise_floor(trainer, batch: dict[str, Any], unshared, rows: int, extra_pad: int = 32) -> float:
    """Max |Δ log-prob| of the unshared pass against itself when only its left padding grows by `extra_pad`.

    The rounding a change of shapes and positions alone brings in fp32: the yardstick of "the same log-probs".
    """
    import torch

    ids, mask = batch["teacher_prompt_ids"][:rows], batch["teacher_prompt_mask"][:rows]
    padded = {
        "teacher_prompt_ids": torch.cat([ids.new_full((rows, extra_pad), ids[0, 0].item()), ids], dim=1),
        "teacher_prompt_mask": torch.cat([mask.new_zeros((rows, extra_pad)), mask], dim=1),
        "completion_ids": batch["completion_ids"][:rows],
        "completion_mask": batch["completion_mask"][:rows],
        "sdar_row_mask": batch["sdar_row_mask"][:rows],
    }
    supported, trainer._share_teacher_prefix = trainer._share_teacher_prefix, False
    try:
        again = trainer._teacher_logps(padded, batch_size=rows)
    finally:
        trainer._share_teacher_prefix = supported
    keep = batch["completion_mask"][:rows].bool()
    return (again - unshared[:rows])[keep].abs().max().item()


def run_teacher_only(model_dir: str, settings, workdir: Path, verbose: bool = False):
    """One rollout batch (the first kind's trainer), then every kind's teacher pass on it, shared vs unshared;
    returns each kind's numbers and the batch."""
    out, batch = {}, None
    for kind in settings.kind_list():
        trainer = build_trainer(f"sdar-{kind}", model_dir, settings, str(workdir / kind))
        trainer.model.train()
        if batch is None:
            rows = [dict(trainer.train_dataset[i // settings.num_generations]) for i in range(settings.batch)]
            batch = trainer._generate_and_score_completions(rows)
        out[kind] = bench_teacher(trainer, batch, settings.batch, settings.teacher_repeats)
        if verbose:
            print(f"[bench] teacher {kind}: {teacher_line(out[kind])}", file=sys.stderr, flush=True)
        del trainer
    return out, batch


def teacher_line(t: dict[str, Any]) -> str:
    """One teacher measurement in one line of the printed table."""
    if not t.get("supported"):
        return f"prefix sharing unsupported for this model; unshared {t['unshared_s']:.2f} s"
    prompt, shared, unshared = t["teacher_prompt_tokens_mean"], t["shared_s"], t["unshared_s"]
    read = f"tokens read {t['tokens_read_shared']} vs {t['tokens_read_unshared']} ({t['tokens_ratio']:.2f}x)"
    return (
        f"{t['rows']} rows, {prompt:.0f}-token teacher prompts: shared {shared:.2f} s, unshared {unshared:.2f} s "
        f"({t['speedup']:.2f}x); {read}; max |Δ log-prob| {t['max_abs_logp_diff']:.2e} (unshared vs itself, "
        f"padding +32: {t['unshared_noise_floor']:.2e})"
    )
