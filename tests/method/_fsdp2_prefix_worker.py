"""Worker for tests/method/test_prefix_scoring.py: 2 CPU processes (gloo), the tiny model sharded with FSDP2
(`fully_shard`), each rank scoring a batch of its own with the shared-prefix teacher pass. The batches differ in
their prefix groups, so the ranks need different numbers of forward calls; under FSDP2 each forward is a collective.
With `most_forwards` the ranks stay in step; without it they would wait on each other until the timeout.

Run: python -m torch.distributed.run --nproc_per_node 2 _fsdp2_prefix_worker.py MODEL_DIR OUT_DIR [--no-sync]
Writes `<out>/rank<r>.json`: the forward calls made, the largest difference to the unsharded model's unshared pass.
"""

import json
import sys
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist


def rank_batch(vocab: int, rank: int):
    """Rank 0: one context under two prompts + a lone row (5 forwards at batch 2); rank 1: two rows (1 forward)."""
    g = torch.Generator().manual_seed(rank)
    tokens = lambda n: torch.randint(3, vocab, (n,), generator=g).tolist()  # noqa: E731
    if rank == 0:
        context, first, second = tokens(40), tokens(30), tokens(25)
        prompts = [context + first] * 3 + [context + second] * 2 + [tokens(12)]
    else:
        prompts = [tokens(9), tokens(14)]
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    completion = torch.randint(3, vocab, (len(prompts), 6), generator=g)
    return ids, mask, completion, torch.ones_like(completion)


def main(model_dir: str, out: str, sync: bool) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForCausalLM
    from trl import GRPOTrainer
    from trl.trainer.utils import add_fused_lm_head

    from trl_sdar.method.prefix_scoring import shared_prefix_logps

    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank = dist.get_rank()
    mesh = init_device_mesh("cpu", (2,), mesh_dim_names=("dp_shard",))

    def fused():
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        add_fused_lm_head(model, temperature=0.7, outputs=("log_probs", "entropy"))
        return model

    plain, sharded = fused(), fused()
    for layer in sharded.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    calls = []
    sharded.register_forward_pre_hook(lambda module, args: calls.append(1))
    ids, mask, completion, completion_mask = rank_batch(plain.config.vocab_size, rank)

    def most_forwards(own: int) -> int:
        count = torch.tensor([own])
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
        return int(count.item())

    with torch.no_grad():
        shared = shared_prefix_logps(sharded, ids, mask, completion, completion_mask, batch_size=2,
                                     most_forwards=most_forwards if sync else None)  # fmt: skip
        trainer = SimpleNamespace(accelerator=SimpleNamespace(autocast=nullcontext, is_main_process=True))
        reference, _, _ = GRPOTrainer._get_per_token_logps_and_entropies(
            trainer, plain, torch.cat([ids, completion], 1), torch.cat([mask, completion_mask], 1),
            completion.size(1), batch_size=2,
        )  # fmt: skip
    result = {"forwards": len(calls), "max_error": (shared - reference).abs().max().item()}
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sync="--no-sync" not in sys.argv[3:])
