"""Worker for tests/agent/test_generation.py: 2 CPU processes (gloo), the tiny model sharded with FSDP2, each rank
playing episodes of its own with HF generation. Rank 0's tasks end after 1 turn, rank 1's after 3 (the scripted
world counts every action), so rank 0 runs out of episodes while rank 1 still generates; under FSDP2 each forward is
a collective. In step (`collective=True` and the turn loop's any-active vote) rank 0 keeps joining rank 1's generate
calls; without it (`--no-sync`) rank 1 waits on rank 0 until the timeout.

Run: python -m torch.distributed.run --nproc_per_node 2 _fsdp2_generation_worker.py MODEL_DIR OUT_DIR [--no-sync]
Writes `<out>/rank<r>.json`: the forward calls made, the turns played and whether each episode's tokens equal the
unsharded model's greedy tokens for the same tasks.
"""

import json
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

TASKS = {0: [0, 3], 1: [2, 5]}  # the scripted world's tasks take task_id % 3 + 1 turns


def main(model_dir: str, out: str, sync: bool) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_sdar.agent.generation import HFGenerator
    from trl_sdar.agent.rollout import ChatTurns, EnvRollout, RolloutSettings
    from trl_sdar.testing import ScriptedEnv

    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=30))
    rank = dist.get_rank()
    mesh = init_device_mesh("cpu", (2,), mesh_dim_names=("dp_shard",))
    plain = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    sharded = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    for layer in sharded.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    calls = []
    sharded.register_forward_pre_hook(lambda module, args: calls.append(1))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def any_active(local: bool) -> bool:
        flag = torch.tensor([float(local)])
        dist.all_reduce(flag)
        return bool(flag.item() > 0)

    def play(model, collective: bool, vote):
        settings = RolloutSettings(rollout_unit="turn", max_turns=5, max_turn_tokens=6, parser="reference")
        rollout = EnvRollout(ScriptedEnv.fixed_length, settings=settings)
        prompts = [row["prompt"] for row in rollout.dataset(TASKS[rank])]
        generator = HFGenerator(model, tokenizer, temperature=0.0, collective=collective)
        with generator:
            episodes = rollout.run(TASKS[rank], prompts, generator, ChatTurns(tokenizer), 6, any_active=vote)
        return [[r.completion_ids for r in e.records] for e in episodes]

    reference = play(plain, False, None)
    played = play(sharded, sync, any_active if sync else None)
    result = {"forwards": len(calls), "turns": [len(e) for e in played], "same_tokens": played == reference}
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sync="--no-sync" not in sys.argv[3:])
