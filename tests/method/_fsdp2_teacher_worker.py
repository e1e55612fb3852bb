"""Worker for tests/method/test_teacher_distributed.py: 2 CPU processes (gloo), real FSDP2 sharding (`fully_shard`),
prepared by accelerate's own `fsdp2_prepare_model` with `cpu_ram_efficient_loading` (rank 1 starts on `meta`).

accelerate only enables FSDP on accelerator devices, so its `Accelerator` is replaced by the few attributes
`fsdp2_prepare_model` reads; sharding, broadcasts and DTensors are torch's own. Writes `<out>/rank<r>.json`.
"""

import json
import os
import sys
from types import SimpleNamespace

import torch
import torch.distributed as dist


def main(model_dir: str, out: str) -> None:
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model
    from torch.distributed.device_mesh import init_device_mesh
    from transformers import AutoConfig, AutoModelForCausalLM

    from trl_sdar import SDARConfig
    from trl_sdar.method.teacher import TEACHER_EMA_FILE, Teacher
    from trl_sdar.method.teacher_sharding import reshard

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    mesh = init_device_mesh("cpu", (2,), mesh_dim_names=("dp_shard",))
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, cpu_ram_efficient_loading=True, reshard_after_forward=True)
    accelerator = SimpleNamespace(
        distributed_type="DistributedType.FSDP", state=SimpleNamespace(fsdp_plugin=plugin), device=torch.device("cpu"),
        mixed_precision="no", is_main_process=rank == 0, torch_device_mesh=mesh,
        parallelism_config=SimpleNamespace(fsdp_dim_names=("dp_shard",)),
    )  # fmt: skip
    if rank == 0:
        policy = AutoModelForCausalLM.from_pretrained(model_dir)
    else:  # what non-main ranks hold under cpu_ram_efficient_loading: parameters on meta, buffers real
        from accelerate import init_empty_weights

        with init_empty_weights():
            policy = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    initial = {n: p.detach().clone() for n, p in AutoModelForCausalLM.from_pretrained(model_dir).named_parameters()}
    args = SDARConfig(output_dir=out, use_cpu=True, bf16=False, report_to="none", teacher_model_kind="ema",
                      teacher_update_rate=0.25)  # fmt: skip
    teacher = Teacher(policy, args, accelerator=accelerator)  # the copy is made before the policy is prepared
    policy = fsdp2_prepare_model(accelerator, policy)
    teacher.model = policy
    result = {"copy_on_meta": any(p.is_meta for p in teacher.copy.parameters())}
    result["copy_is_sharded"] = all(hasattr(p, "to_local") for p in teacher.copy.parameters())
    full = dict(teacher_full(teacher))
    result["copy_equals_initial"] = all(torch.equal(full[n], initial[n]) for n in initial)

    x = torch.tensor([[3, 4, 5, 6, 7]])
    with torch.no_grad(), teacher.scoring(policy) as model:
        teacher_logits = model(input_ids=x).logits
        policy_logits = policy(input_ids=x).logits
    result["teacher_logits_equal_policy"] = bool(torch.equal(teacher_logits, policy_logits))

    with torch.no_grad():  # an "optimizer step": every student weight moves by +1 (on each rank's own shard)
        reshard(policy)  # as after a backward pass: the optimizer steps on shards
        for p in policy.parameters():
            p.to_local().add_(1.0)
    teacher.ema_update()
    full = dict(teacher_full(teacher))
    result["ema_error"] = max((full[n] - (0.75 * initial[n] + 0.25 * (initial[n] + 1.0))).abs().max().item()
                              for n in initial)  # fmt: skip

    teacher.save(out, is_main_process=rank == 0)
    dist.barrier()
    with torch.no_grad():
        for p in teacher.copy.parameters():
            p.to_local().zero_()
    result["loaded"] = teacher.load(out)
    reloaded = dict(teacher_full(teacher))
    result["reload_equal"] = all(torch.equal(reloaded[n], full[n]) for n in full)
    result["saved_file"] = os.path.isfile(os.path.join(out, TEACHER_EMA_FILE))
    result.update(lora_ema(model_dir, args, accelerator, rank))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as handle:
        json.dump(result, handle)
    dist.destroy_process_group()


def lora_ema(model_dir: str, args, accelerator, rank: int) -> dict:
    """The PEFT EMA teacher (an adapter of the sharded policy): moved on each rank's shards after a step."""
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from trl_sdar.method.teacher import Teacher
    from trl_sdar.method.teacher_sharding import reshard

    torch.manual_seed(0)  # same LoRA init on both ranks (rank 0's is broadcast anyway)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, init_lora_weights=False)
    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), config)
    teacher = Teacher(policy, args)
    start = dict(teacher_full(teacher))
    policy = fsdp2_prepare_model(accelerator, policy)
    x = torch.tensor([[3, 4, 5, 6, 7]])
    with torch.no_grad(), teacher.scoring(policy) as model:
        model(input_ids=x)  # a teacher pass leaves the root group unsharded: the update must still land
    reshard(policy)
    pairs = teacher._adapter_pairs()
    with torch.no_grad():
        for student, _ in pairs:
            student.to_local().add_(1.0)
    teacher.ema_update()
    after = dict(teacher_full(teacher))
    return {
        "lora_pairs": len(pairs),
        "lora_sharded": all(hasattr(t, "to_local") for _, t in pairs),
        "lora_ema_error": max((after[n] - (start[n] + 0.25)).abs().max().item() for n in start),
    }


def teacher_full(teacher):
    from trl_sdar.method.teacher_sharding import full_state

    return full_state(teacher._ema_named()).items()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
