"""Run under 2 processes (torchrun / accelerate launch): turn rows with a different number of rows on each rank.

Episodes of task t last t % 3 + 1 turns whatever the model writes, and each rank plays another task, so the ranks
hold uneven row counts. Writes, from every rank, its real row counts and the trainable checksum to argv[1].
"""

import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_sdar import SDARConfig, SDARTrainer
from trl_sdar.agent.rollout import EnvRollout, RolloutSettings, env_reward
from trl_sdar.testing import ScriptedEnv


def main(out_path: str, model_dir: str) -> None:
    torch.set_num_threads(1)
    settings = RolloutSettings(rollout_unit="turn", max_turns=5, max_turn_tokens=6)
    rollout = EnvRollout(ScriptedEnv.fixed_length, skills=lambda t: "a privileged hint", settings=settings)
    played = []
    original = rollout.turn_rows

    def recording(episodes, with_logprobs):
        rows = original(episodes, with_logprobs)
        played.append(len(rows["prompt_ids"]))
        return rows

    rollout.turn_rows = recording
    args = SDARConfig(
        output_dir=out_path + ".run", use_cpu=True, bf16=False, report_to="none", save_strategy="no",
        gradient_checkpointing=False, num_generations=2, per_device_train_batch_size=2, max_completion_length=6,
        max_steps=2, logging_steps=1, learning_rate=1e-3, seed=0, max_tokens_per_backward=64, loss_type="grpo",
    )  # fmt: skip
    trainer = SDARTrainer(
        AutoModelForCausalLM.from_pretrained(model_dir),
        env_reward,
        args=args,
        train_dataset=rollout.dataset([0, 1, 2, 4]),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        rollout_func=rollout,
    )
    trainer.train()
    checksum = torch.stack([p.detach().sum() for p in trainer.model.parameters()]).sum().reshape(1)
    sums = trainer.accelerator.gather(checksum).tolist()
    counts = trainer.accelerator.gather(torch.tensor(played)).tolist()
    if trainer.accelerator.is_main_process:
        logs = [h for h in trainer.state.log_history if "loss" in h]
        result = {"checksums": sums, "rows_per_rank_and_step": counts, "logs": logs}
        with open(out_path, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
