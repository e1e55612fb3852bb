"""Score only the labelled positions through TRL's fused LM head on CPU, as TRL already does on CUDA.

TRL 1.16 computes per-token log-probabilities with a chunked "fused LM head" (`model(..., labels=…,
fused_lm_head=True)`, used by `GRPOTrainer`, hence `SDARTrainer`, and `SFTTrainer`). On devices with Triton it
projects only the positions whose label is not -100; everywhere else it projects *every* position and masks the
result afterwards, because on compiled backends (e.g. Neuron) a varying number of positions would recompile the tile
shapes. Eager CPU has no such cost, but the full projection does: with the agent's `turn` rows (a ~400-token step
prompt, a ~40-token completion) and a 49,152-token vocabulary, the output layer then runs on ~10× the positions it
needs and dominates a small model's step.

`compact_cpu_head()` makes TRL's choice "compact" for CPU tensors too, while it is entered. The log-probabilities of
the labelled positions are unchanged (the same tiles and reductions, on fewer rows; tested), masked positions stay 0,
and CUDA/XPU and other devices keep TRL's own choice. It swaps the module-level name TRL's fused head looks up at each
call (`trl.trainer.utils._use_triton`, which selects compaction only; the kernel choice inside TRL's chunked-logprob
module is left alone) and puts TRL's own back on exit, so nothing outside the scoring calls of `SDARTrainer` and
`trl-sdar sft` sees it. Nested use is safe. Set `TRL_SDAR_CPU_COMPACT_HEAD=0` to keep TRL's behaviour.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

ENV_SWITCH = "TRL_SDAR_CPU_COMPACT_HEAD"
_PATCHED = "_trl_sdar_compact_cpu"


@contextmanager
def compact_cpu_head() -> Iterator[bool]:
    """Inside: TRL's fused head scores CPU tensors compactly (yields whether it does); TRL's choice is restored on
    exit by the outermost `with`."""
    if os.environ.get(ENV_SWITCH, "1") in ("0", "false", "False"):
        yield False
        return
    from trl.trainer import utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if original is None:
        raise RuntimeError(
            "trl.trainer.utils._use_triton is gone: this TRL version chooses fused-head compaction differently; "
            f"update trl_sdar.method.cpu_head or set {ENV_SWITCH}=0."
        )
    if getattr(original, _PATCHED, False):  # an outer `with` holds it
        yield True
        return

    def use_compact(device) -> bool:
        return device.type == "cpu" or original(device)

    setattr(use_compact, _PATCHED, True)
    use_compact.original = original
    trl_utils._use_triton = use_compact
    try:
        yield True
    finally:
        trl_utils._use_triton = original
