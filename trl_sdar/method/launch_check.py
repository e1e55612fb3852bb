"""Does the trainer run the way it was launched? `accelerate launch` / `torchrun` start N processes and tell each
one so (`WORLD_SIZE`); the trainer only learns of them if its arguments make it distributed. When they disagree,
each process trains alone on the same data and writes to the same `output_dir`, which is never what was meant."""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("trl_sdar")


def launched_processes() -> int:
    """How many processes the launcher started (1 when the script was run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def refuse_multi_process(tool: str) -> None:
    """One-process tools (benchmarks, measurement scripts) build and score models outside any trainer: launched as
    N processes they would run N unsharded copies, or, sharded, hang on forwards the other processes never make."""
    if launched_processes() > 1:
        raise SystemExit(
            f"{tool}: launched as {launched_processes()} processes, but it runs in one (no sharded model, no process "
            "group); run it with python directly. Sharded training is `trl-sdar train` with an accelerate config."
        )


def check_launched_processes(args) -> None:
    """Refuse a multi-process launch whose trainer is not distributed (e.g. GPU settings on a machine without GPUs:
    transformers then runs every process on its own and only logs a notice)."""
    launched = launched_processes()
    if launched > 1 and args.world_size != launched:
        device = "no CUDA device is visible" if not _cuda_visible() else f"the trainer sees {args.world_size}"
        raise RuntimeError(
            f"launched as {launched} processes, but the trainer is not distributed (parallel_mode="
            f"{args.parallel_mode.value}, world_size={args.world_size}; {device}): each process would train alone on "
            "the same data and overwrite the same output_dir. On a machine without GPUs set use_cpu: true in the "
            "recipe (the processes then train together over gloo, as recipes/accelerate/cpu_2proc.yaml does); "
            "otherwise check the accelerate config and CUDA_VISIBLE_DEVICES."
        )


def warn_if_sharding_dropped(accelerator) -> None:
    """accelerate enables FSDP only on GPU-like devices: on CPU an FSDP config runs as plain data parallelism, with
    every process holding the whole model. Say so once, so that no one reads a CPU run as an FSDP test."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return
    kind = str(getattr(accelerator, "distributed_type", "NO")).rsplit(".", 1)[-1]
    if kind != "FSDP":
        logger.warning(
            f"the accelerate config asks for FSDP, but accelerate runs this {kind} (it shards only on GPUs and "
            "other accelerators): every process holds the whole model."
        )


def _cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()
