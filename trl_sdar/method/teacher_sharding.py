"""The teacher's own weights under DeepSpeed ZeRO and FSDP2: prepared copies, gathered EMA updates, full-tensor I/O.

* A frozen copy (`base`/`ema` without PEFT) is built and prepared the way TRL builds and prepares its reference model.
  Under ZeRO-3 it is loaded again from the policy's path (a deep copy of partitioned parameters copies their empty
  placeholders) and partitioned by its own DeepSpeed engine; under ZeRO-1/2 the deep copy gets a stage-0 inference
  engine (placed and cast like the policy); under FSDP2 accelerate's own preparation shards it and, with
  `cpu_ram_efficient_loading`, fills the ranks whose copy sits on the meta device from rank 0.
* The EMA update runs on full values: ZeRO-3 parameters are gathered in bounded chunks (`GatheredParameters`, rank 0's
  result partitioned back); FSDP2 DTensors of one placement are updated shard by shard, which needs no gather.
* Saving and loading the EMA weights gathers and scatters the same way, so a checkpoint holds plain full tensors.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext

import torch
from torch import nn

COLLECTIVE_FORWARD = ("zero3", "fsdp1", "fsdp2")  # shardings whose every forward call is a collective
GATHER_CHUNK_NUMEL = 1 << 26  # ZeRO-3: at most ~67M elements (per side) gathered at once during the EMA update


def sharding_of(accelerator) -> str:
    """ "zero3", "deepspeed" (ZeRO-0/1/2), "fsdp2", "fsdp1" or "none" (single process, DDP)."""
    if accelerator is None:
        return "none"
    kind = str(getattr(accelerator, "distributed_type", "NO")).rsplit(".", 1)[-1]
    if kind == "DEEPSPEED":
        stage = accelerator.state.deepspeed_plugin.deepspeed_config["zero_optimization"]["stage"]
        return "zero3" if stage == 3 else "deepspeed"
    if kind == "FSDP":
        return "fsdp2" if accelerator.state.fsdp_plugin.fsdp_version == 2 else "fsdp1"
    return "none"


def any_over_processes(accelerator) -> Callable[[bool], bool]:
    """`f(flag)`: whether any process passes True (a collective: every process must call it)."""

    def any_true(local: bool) -> bool:
        flag = torch.tensor([float(local)], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)

    return any_true


def most_over_processes(accelerator) -> Callable[[int], int]:
    """`f(n)`: the largest `n` any process passes (a collective: every process must call it)."""

    def most(count: int) -> int:
        local = torch.tensor([count], device=accelerator.device)
        return int(accelerator.gather(local).max().item())

    return most


def is_partitioned(param: torch.Tensor) -> bool:
    """A DeepSpeed ZeRO-3 parameter: its `.data` is a placeholder, the values live in partitions across ranks."""
    return hasattr(param, "ds_id")


def _zero3_gather(params: list[torch.Tensor], modifier_rank: int | None):
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank)


@contextmanager
def gathered(params: Sequence[torch.Tensor], *, modify: bool) -> Iterator[None]:
    """Full values of `params` inside the block. ZeRO-3 parameters are all-gathered; with `modify=True` rank 0's
    writes are partitioned back on exit (every rank computes the same update, rank 0's copy is kept)."""
    partitioned = [p for p in params if is_partitioned(p)]
    with _zero3_gather(partitioned, 0 if modify else None) if partitioned else nullcontext():
        yield


def chunks(pairs: Sequence[tuple[torch.Tensor, object]], max_numel: int | None = None):
    """Consecutive runs of `pairs` whose first tensors stay under `max_numel` elements in all (default
    `GATHER_CHUNK_NUMEL`; a single larger one goes alone)."""
    max_numel = max_numel or GATHER_CHUNK_NUMEL
    chunk, size = [], 0
    for pair in pairs:
        numel = getattr(pair[0], "ds_numel", pair[0].numel())
        if chunk and size + numel > max_numel:
            yield chunk
            chunk, size = [], 0
        chunk.append(pair)
        size += numel
    if chunk:
        yield chunk


def reshard(module: nn.Module | None) -> None:
    """Put FSDP2 parameters back into their sharded DTensors. A forward without backward (the teacher's, or any root
    group with `reshard_after_forward=False`) leaves full tensors registered, and writes into those are lost at the
    next reshard."""
    if module is None:
        return
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch without FSDP2
        return
    for sub in module.modules():
        if isinstance(sub, FSDPModule):
            sub.reshard()


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


@torch.no_grad()
def lerp_pairs_(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], rate: float) -> None:
    """teacher ← (1 − rate)·teacher + rate·student for each (student, teacher) pair, on full values."""
    _update_pairs(pairs, lambda teacher, student: teacher.lerp_(student.to(teacher.dtype), rate))


@torch.no_grad()
def copy_pairs_(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """teacher ← student for each pair (the EMA teacher's start)."""
    _update_pairs(pairs, lambda teacher, student: teacher.copy_(student))


def _update_pairs(pairs, update) -> None:
    for chunk in chunks(pairs):
        # ZeRO-3: students are only read (not partitioned back), teachers are written (rank 0's kept)
        with gathered([s for s, _ in chunk], modify=False), gathered([t for _, t in chunk], modify=True):
            for student, teacher in chunk:
                if hasattr(teacher, "placements") and hasattr(student, "placements"):
                    if teacher.placements != student.placements:
                        student = student.redistribute(teacher.device_mesh, teacher.placements)
                update(_local(teacher), _local(student))


def full_state(named: Sequence[tuple[str, torch.Tensor]], *, keep: bool = True) -> dict[str, torch.Tensor]:
    """Full CPU tensors of named parameters (collective under ZeRO-3 and FSDP2: every rank must call it); ranks with
    `keep=False` take part in the gathers and return an empty dict."""
    state = {}
    for chunk in chunks([(p, name) for name, p in named]):
        with gathered([p for p, _ in chunk], modify=False):
            for param, name in chunk:
                full = param.full_tensor() if hasattr(param, "full_tensor") else param
                if keep:
                    state[name] = full.detach().to("cpu", copy=True).contiguous()
    return state


@torch.no_grad()
def load_state_(named: Sequence[tuple[str, torch.Tensor]], state: dict[str, torch.Tensor]) -> None:
    """Write full tensors into named parameters (sharded or partitioned ones included; collective)."""
    missing = [name for name, _ in named if name not in state]
    if missing:
        raise ValueError(f"The saved teacher weights lack {len(missing)} tensor(s), e.g. {missing[0]!r}.")
    for chunk in chunks([(p, name) for name, p in named]):
        with gathered([p for p, _ in chunk], modify=True):
            for param, name in chunk:
                value = state[name].to(param.dtype)
                if hasattr(param, "device_mesh"):
                    from torch.distributed.tensor import distribute_tensor

                    value = distribute_tensor(value.to(param.device), param.device_mesh, param.placements)
                _local(param).copy_(_local(value).to(param.device))


def frozen_copy(model: nn.Module, args, accelerator) -> tuple[nn.Module, bool]:
    """A frozen, fused-head copy of the (unwrapped) policy for `base`/`ema`, prepared for the run's sharding.

    Returns `(copy, placed)`; `placed` is False when the copy still has to follow the policy's device.
    """
    from trl.trainer.utils import add_fused_lm_head

    mode = sharding_of(accelerator)
    if mode == "fsdp1" and args.teacher_model_kind == "ema":
        raise ValueError(
            "teacher_model_kind='ema' without PEFT needs FSDP2 (fsdp_version: 2) or DeepSpeed under FSDP; FSDP1's "
            "flattened parameters cannot be averaged. Use fsdp_version: 2, or LoRA (the EMA teacher is an adapter)."
        )
    if mode == "zero3":
        teacher = _load_like(model, args)
    else:
        teacher = copy.deepcopy(model)  # FSDP2 + cpu_ram_efficient_loading: a meta copy here, filled when prepared
        teacher.__dict__.pop("forward", None)  # drop the copied fused-head patch; re-add it bound to the copy
    add_fused_lm_head(teacher, temperature=args.temperature, cast_lm_head_to_fp32=args.cast_lm_head_to_fp32)
    teacher.requires_grad_(False)
    teacher.eval()
    if mode in ("zero3", "deepspeed"):
        from trl.models import prepare_deepspeed

        return prepare_deepspeed(teacher, accelerator), True
    if mode == "fsdp2":
        from accelerate.utils.fsdp_utils import fsdp2_prepare_model

        return fsdp2_prepare_model(accelerator, teacher).eval(), True
    if mode == "fsdp1":
        from trl.models import prepare_fsdp

        return prepare_fsdp(teacher, accelerator), True
    return teacher, False


def _load_like(model: nn.Module, args) -> nn.Module:
    """The policy's initial weights loaded again from its path, with its dtype and attention (TRL's ref-model way)."""
    from trl.trainer.utils import create_model_from_path, get_config_model_id

    kwargs = dict(args.model_init_kwargs or {})
    kwargs["device_map"] = None
    kwargs.setdefault("trust_remote_code", args.trust_remote_code)
    kwargs.setdefault("dtype", model.dtype)
    kwargs.setdefault("attn_implementation", model.config._attn_implementation)
    return create_model_from_path(get_config_model_id(model.config), **kwargs)


def unwrapped(module: nn.Module) -> nn.Module:
    """The model inside a DeepSpeed engine (or FSDP1 wrapper); FSDP2 shards in place, so the module itself."""
    return getattr(module, "module", module)
