"""Share of a training step spent in the environments (issue: env time must be a small share of a step).

Runs SDAR training steps through each built-in environment with the tiny model on CPU and reports, per env: the
median step time, the rollout's generation and environment seconds, and the environment share of the step.
Usage: python benchmarks/rollout.py [--envs alfworld,webshop,search_qa] [--steps 3] [--output FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness, when loaded by path (tests)

from harness import measured, ratio, write_json  # noqa: E402

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def bench_env(env_name: str, model_dir: str, steps: int, batch: int, workers: int) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from trl_sdar import EnvRollout, RolloutSettings, SDARConfig, SDARTrainer, env_reward
    from trl_sdar.envs import make_env
    from trl_sdar.skills import SkillSelector

    rollout = EnvRollout(
        lambda: make_env(env_name),
        skills=SkillSelector.builtin(env_name),
        settings=RolloutSettings(max_turns=8, max_turn_tokens=12, num_workers=workers),
    )
    timings: list[dict] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            timings.append({"step_s": time.perf_counter() - self.start, **rollout.last_timing})

    with tempfile.TemporaryDirectory() as out:
        args = SDARConfig(
            output_dir=out, use_cpu=True, bf16=False, report_to="none", save_strategy="no",
            gradient_checkpointing=False, num_generations=4, per_device_train_batch_size=batch,
            max_completion_length=512, max_steps=steps, logging_steps=1, disable_tqdm=True,
        )  # fmt: skip
        trainer = SDARTrainer(
            AutoModelForCausalLM.from_pretrained(model_dir), env_reward, args=args,
            train_dataset=rollout.dataset(range(steps * batch // 4)),
            processing_class=AutoTokenizer.from_pretrained(model_dir), rollout_func=rollout, callbacks=[Timer()],
        )  # fmt: skip
        trainer.train()
    counted = measured(timings)  # the first step warms up
    step = statistics.median(t["step_s"] for t in counted)
    env_s = statistics.median(t["env_s"] for t in counted)
    gen_s = statistics.median(t["generate_s"] for t in counted)
    return {
        "env": env_name,
        "step_s": step,
        "generate_s": gen_s,
        "env_s": env_s,
        "env_share_of_step": ratio(env_s, step),
    }


def main() -> None:
    from trl_sdar.method.launch_check import refuse_multi_process

    refuse_multi_process("benchmarks/rollout.py")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default="alfworld,webshop,search_qa")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8, help="episodes per step (per_device_train_batch_size)")
    parser.add_argument("--workers", type=int, default=8, help="concurrent environment steps")
    parser.add_argument("--output", type=Path, default=Path("outputs/bench_rollout.json"))
    args = parser.parse_args()

    import torch

    from trl_sdar.models.tiny import make_tiny_model_dir

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(make_tiny_model_dir(tmp))
        rows = [bench_env(e, model_dir, args.steps, args.batch, args.workers) for e in args.envs.split(",")]
    print(f"\n{'env':<10} {'step s':>8} {'generate s':>11} {'env s':>8} {'env share':>10}")
    for r in rows:
        share = r["env_share_of_step"]
        print(f"{r['env']:<10} {r['step_s']:>8.2f} {r['generate_s']:>11.2f} {r['env_s']:>8.2f} {share:>10.1%}")
    write_json(args.output, rows)
    print(f"\nwritten: {args.output}")


if __name__ == "__main__":
    main()
