"""Offline SDAR demo: a tiny chat model learns, with skills shown only to the teacher, for a few steps on CPU."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output-dir", default="outputs/demo")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_sdar import SDARConfig, SDARTrainer
    from trl_sdar.skills import load_builtin_skills
    from trl_sdar.testing import make_tiny_model_dir

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    out = Path(args.output_dir)
    model_dir = make_tiny_model_dir(out / "tiny-model")
    skills = load_builtin_skills("alfworld")
    context = skills.general + "\n\n" + skills.section(skills.task_to_skill["pick_clean_then_place_in_recep"])
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Task {i}: put a clean mug in coffeemachine."}],
            "privileged_context": context,
        }
        for i in range(16)
    ]

    def format_reward(completions, **kwargs):
        return [float("<action>" in c[0]["content"]) + 0.1 * len(c[0]["content"].split()) for c in completions]

    config = SDARConfig(
        output_dir=str(out),
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        max_steps=args.steps,
        num_generations=4,
        per_device_train_batch_size=8,
        max_completion_length=16,
        learning_rate=1e-3,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
    )
    trainer = SDARTrainer(
        AutoModelForCausalLM.from_pretrained(model_dir),
        format_reward,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )
    trainer.train()
    trainer.save_model(str(out / "checkpoint"))
    metrics = out / "log_history.json"
    metrics.write_text(json.dumps(trainer.state.log_history, indent=1))
    last = [h for h in trainer.state.log_history if "sdar/gate_mean" in h][-1]
    print(f"\nSDAR gate mean {last['sdar/gate_mean']:.3f}, teacher gap {last['sdar/teacher_gap_mean']:+.3f}")
    print(f"checkpoint: {out / 'checkpoint'}\nmetrics:    {metrics}")


if __name__ == "__main__":
    main()
