"""Run under 2 processes (`trl_sdar.testing.rank_reports`): each rank asks for `student_share_prefix` with a dataset
of its own (rank 0's prompts repeat, so they have a prefix to share; rank 1's do not), which would make the ranks run
different numbers of forwards before one backward. Every rank must refuse, naming the field.

Writes `<out>/rank<r>.json`: the error message (None if the trainer was built) and the world size the config saw.
"""

import json
import sys
from pathlib import Path

import torch.distributed as dist
from datasets import Dataset
from transformers import AutoTokenizer

from trl_sdar import SDARConfig, SDARTrainer

PROMPTS = {0: ["rinse the mug in the sink, then put it in the cabinet " * 3] * 4, 1: ["a", "b", "c", "d"]}


def main(model_dir: str, out: str) -> None:
    args = SDARConfig(
        output_dir=str(Path(out) / "run"), use_cpu=True, bf16=False, report_to="none", save_strategy="no",
        gradient_checkpointing=False, num_generations=2, per_device_train_batch_size=2, max_completion_length=4,
        max_steps=1, student_share_prefix=True,
    )  # fmt: skip
    rank = args.process_index
    error = None
    try:
        SDARTrainer(
            model_dir,
            lambda completions, **kw: [0.0] * len(completions),
            args=args,
            train_dataset=Dataset.from_list([{"prompt": p} for p in PROMPTS[rank]]),
            processing_class=AutoTokenizer.from_pretrained(model_dir),
        )
    except ValueError as exc:
        error = str(exc)
    report = {"error": error, "world_size": args.world_size}
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(report))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
