"""`episode` vs `turn` rollout units on the same ALFWorld batch: tokens per optimizer step, peak memory, budget ends.

Each unit trains one optimizer step in its own process (so peak RSS is that unit's), on the same built-in ALFWorld
tasks (easy rooms) with the same seed: SmolLM2-135M-Instruct + LoRA (or `--model builtin:tiny`), GRPO loss
(`--sdar_coef` for SDAR). Prints one JSON line per unit and the turn/episode ratios.

Usage: python benchmarks/units.py [--model builtin:smollm2] [--tasks 2] [--generations 2] [--max_turns 8]
       [--max_turn_tokens 48] [--episode_budget 1024] [--max_tokens_per_backward 8192] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness, when loaded by path (tests)

from harness import compare, peak_rss_mb, write_json  # noqa: E402

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
COMPARED = ("rows", "forward_tokens", "trained_tokens", "peak_rss_mb")  # turn/episode ratios of these


def run_unit(opts: argparse.Namespace) -> dict:
    import torch
    from peft import LoraConfig
    from transformers import AutoTokenizer, TrainerCallback

    from trl_sdar import EnvRollout, RolloutSettings, SDARConfig, SDARTrainer, env_reward
    from trl_sdar.envs import make_env
    from trl_sdar.envs.alfworld_games import EASY
    from trl_sdar.models import resolve_model_path
    from trl_sdar.skills import SkillSelector

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    settings = RolloutSettings(
        rollout_unit=opts.unit, max_turns=opts.max_turns, max_turn_tokens=opts.max_turn_tokens, history_window=2
    )
    rollout = EnvRollout(lambda: make_env("alfworld", difficulty=EASY), skills=SkillSelector.builtin("alfworld"),
                         settings=settings)  # fmt: skip
    seen: dict = {}

    class Capture(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            seen.update(logs or {})

    model_path = resolve_model_path(opts.model)
    budget = opts.episode_budget if opts.unit == "episode" else opts.max_turn_tokens
    args = SDARConfig(
        output_dir=tempfile.mkdtemp(), use_cpu=True, bf16=False, report_to="none", save_strategy="no",
        gradient_checkpointing=False, num_generations=opts.generations,
        per_device_train_batch_size=opts.tasks * opts.generations, max_completion_length=budget, max_steps=1,
        logging_steps=1, learning_rate=1e-4, seed=opts.seed, sdar_coef=opts.sdar_coef, beta=0.0,
        max_tokens_per_backward=opts.max_tokens_per_backward if opts.unit == "turn" else None,
    )  # fmt: skip
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    trainer = SDARTrainer(
        model_path, env_reward, args=args, train_dataset=rollout.dataset(range(128, 128 + opts.tasks)),
        processing_class=AutoTokenizer.from_pretrained(model_path), rollout_func=rollout,
        peft_config=lora if "smollm2" in opts.model else None, callbacks=[Capture()],
    )  # fmt: skip
    tokens: dict = {}
    original = trainer._generate_and_score_completions

    def counting(inputs):
        output = original(inputs)
        tokens["rows"] = int(output["prompt_ids"].size(0))
        tokens["forward_tokens"] = int(output["prompt_mask"].sum() + output["completion_mask"].sum())
        tokens["trained_tokens"] = int(output["num_items_in_batch"])
        return output

    trainer._generate_and_score_completions = counting
    start = time.perf_counter()
    trainer.train()
    return {
        "unit": opts.unit,
        "step_s": round(time.perf_counter() - start, 1),
        **tokens,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "budget_ended": seen.get("env/alfworld/budget_ended"),
        "turns_per_episode": seen.get("env/alfworld/turns"),
        "invalid_rate": seen.get("env/alfworld/invalid_rate"),
    }


def main() -> None:
    from trl_sdar.method.launch_check import refuse_multi_process

    refuse_multi_process("benchmarks/units.py")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:smollm2")
    parser.add_argument("--tasks", type=int, default=2)
    parser.add_argument("--generations", type=int, default=2)
    parser.add_argument("--max_turns", type=int, default=8)
    parser.add_argument("--max_turn_tokens", type=int, default=48)
    parser.add_argument("--episode_budget", type=int, default=1024)
    parser.add_argument("--max_tokens_per_backward", type=int, default=8192)
    parser.add_argument("--sdar_coef", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unit", choices=["episode", "turn"], help=argparse.SUPPRESS)
    parser.add_argument("--output", default=None)
    opts = parser.parse_args()
    if opts.unit:  # child process: one unit
        print("RESULT " + json.dumps(run_unit(opts)), flush=True)
        return
    results = []
    for unit in ("episode", "turn"):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--unit", unit]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            errors = [x for x in out.stderr.splitlines() if "%|" not in x]  # without progress bars
            raise SystemExit(f"{unit} run failed (exit {out.returncode}):\n" + "\n".join(errors[-40:]))
        results.append(json.loads(line[len("RESULT ") :]))
        print(json.dumps(results[-1]), flush=True)
    by_unit = {r["unit"]: r for r in results}
    ratios = compare(by_unit, {k: k for k in COMPARED}, reference="episode")["turn"]["ratios"]
    ratios = {k: round(v, 2) for k, v in ratios.items()}
    print(json.dumps({"turn_over_episode": ratios}))
    if opts.output:
        write_json(opts.output, {"args": vars(opts), "results": results, "turn_over_episode": ratios})


if __name__ == "__main__":
    main()
