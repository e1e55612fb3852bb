"""Worker for tests/agent/test_generation.py: 2 CPU processes (gloo), the tiny model sharded with FSDP2, each rank
playing episodes of its own with HF generation. Rank 0's tasks end after 1 turn, rank 1's after 3 (the scripted
world counts every action), so rank 0 runs out of episodes while rank 1 still generates; under FSDP2 each forward is
a collective. In step (`collective=True` and the turn loop's any-active vote) rank 0 keeps joining rank 1's generate
calls; without it (`--no-sync`) rank 1 waits on rank 0 until the timeout.

With `--shared-prompts` rank 0 plays one task twice (two episodes with the same first prompt, a prefix the generator
could prefill once) and rank 1 one episode (nothing to share): a collective generator must not add that prefill
forward, or rank 1 never joins it; `--force-share` turns the sharing on anyway, to show it hangs.

Run: python -m torch.distributed.run --nproc_per_node 2 _fsdp2_generation_worker.py MODEL_DIR OUT_DIR [--no-sync]
[--shared-prompts] [--force-share]
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
SHARED_PROMPT_TASKS = {0: [0, 0], 1: [2]}


def main(model_dir: str, out: str, sync: bool, shared_prompts: bool = False, force_share: bool = False) -> None:
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
    shared = []  # per play: did its first generate call prefill fewer tokens than rows x width (a prefix shared)?

    def any_active(local: bool) -> bool:
        flag = torch.tensor([float(local)])
        dist.all_reduce(flag)
        return bool(flag.item() > 0)

    def play(model, collective: bool, vote):
        settings = RolloutSettings(rollout_unit="turn", max_turns=5, max_turn_tokens=6, parser="reference")
        rollout = EnvRollout(ScriptedEnv.fixed_length, settings=settings)
        tasks = (SHARED_PROMPT_TASKS if shared_prompts else TASKS)[rank]
        prompts = [row["prompt"] for row in rollout.dataset(tasks)]
        generator = HFGenerator(model, tokenizer, temperature=0.0, collective=collective)
        if force_share:
            generator.share_prefixes = True
        calls_seen = []
        generate = generator.generate

        def recording(contexts, max_new_tokens):
            out = generate(contexts, max_new_tokens)
            full = len(contexts) * max((len(c) for c in contexts), default=0)
            calls_seen.append(0 < generator.last_prefill_tokens < full)
            return out

        generator.generate = recording
        with generator:
            episodes = rollout.run(tasks, prompts, generator, ChatTurns(tokenizer), 6, any_active=vote)
        shared.append(calls_seen[0] if calls_seen else False)
        return [[r.completion_ids for r in e.records] for e in episodes]

    reference = play(plain, False, None)
    played = play(sharded, sync, any_active if sync else None)
    result = {
        "forwards": len(calls),
        "turns": [len(e) for e in played],
        "same_tokens": played == reference,
        "episodes": len(played),
        "first_call_shared": {"unsharded": shared[0], "sharded": shared[1]},
    }
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    flags = sys.argv[3:]
    main(sys.argv[1], sys.argv[2], sync="--no-sync" not in flags, shared_prompts="--shared-prompts" in flags,
         force_share="--force-share" in flags)  # fmt: skip
