"""One training step of a study recipe, profiled: where its time goes and what sharing prompt prefixes saves.

Builds the recipe's trainer (exactly as `trl-sdar train` does) once per arm and trains the arms side by side, one
step at a time in turn, so they share the machine's load. Arms: GRPO (`sdar_coef: 0`) and the recipe's own SDAR,
each unshared (every row prefilled and scored in full: `generation_share_prefix: false`, `student_share_prefix:
false`, as TRL does) and shared (both `true`: a prompt several rows start with is encoded once in generation and in
the student's passes). Each step is split into

* rollout: the episodes (generation and the environment), TRL's scoring of the batch, the old-policy and reference
  passes where the config needs them;
* teacher: the teacher's log-probs (rollout time or per micro-batch);
* student forward: the student's log-prob passes that build a graph (the loss);
* backward and optimizer: the rest of the step.

Prints and writes (`--output`) each arm's medians over the measured steps (the first is the warm-up), tokens per
step, and every arm's step time relative to unshared GRPO in the same run.

    python benchmarks/study_step.py --config recipes/study/sdar_smollm2_doors_cpu.yaml \\
        --model outputs/study/doors_smollm2_sft --steps 4 --output docs/results/study_step_doors.json \\
        --per_device_train_batch_size 32        # any further flag overrides the recipe, as in `trl-sdar train`
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import Memory, Turns, end_load, machine, measured, ratio, run_side_by_side, timed, write_json
from overhead_arms import _step_recorder, _timed_trainer_class

ARMS = {  # name: (sdar_coef override (None: the recipe's), generation_share_prefix and student_share_prefix)
    "grpo": (0.0, False),
    "grpo-shared": (0.0, True),
    "sdar": (None, False),
    "sdar-shared": (None, True),
}


def _profiled_class():
    """The overhead benchmark's timed trainer, also timing the student's graph-building passes and counting the rows
    of each generation batch (its step recorder records the change in both per step)."""
    import torch

    base = _timed_trainer_class()

    class ProfiledTrainer(base):
        def _bench(self) -> dict[str, Any]:
            state = super()._bench()
            state.setdefault("student_s", 0.0)
            state.setdefault("rows", 0)
            return state

        def _get_per_token_logps_and_entropies(self, model, input_ids, *args, **kwargs):
            if not torch.is_grad_enabled():
                return super()._get_per_token_logps_and_entropies(model, input_ids, *args, **kwargs)
            out, seconds = timed(super()._get_per_token_logps_and_entropies, model, input_ids, *args, **kwargs)
            self._bench()["student_s"] += seconds
            return out

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            self._bench()["rows"] += int(out["completion_ids"].size(0))
            return out

    return ProfiledTrainer


def build_arm(argv: list[str], name: str, workdir: Path):
    from trl_sdar.commands.recipe.launch import parse_train_args
    from trl_sdar.commands.train import build_trainer

    coef, share = ARMS[name]
    extra = ["--output_dir", str(workdir / name), "--student_share_prefix", str(share).lower(),
             "--generation_share_prefix", str(share).lower(), "--save_strategy", "no", "--disable_tqdm", "true",
             "--logging_strategy", "no"]  # fmt: skip
    if coef is not None:
        extra += ["--sdar_coef", str(coef)]
    script, training, model, launch_args, _ = parse_train_args(argv + extra)
    if launch_args:
        raise SystemExit("study_step.py runs in one process; drop the recipe's launch settings.")
    trainer, _ = build_trainer(script, training, model, trainer_class=_profiled_class())
    return trainer


def summarise(steps: list[dict[str, float]]) -> dict[str, Any]:
    counted = measured(steps)

    def median(key):
        return statistics.median(s[key] for s in counted)

    rest = [s["step_s"] - s["rollout_s"] - s["teacher_s"] - s["student_s"] for s in counted]
    return {
        "step_s": median("step_s"),
        "rollout_s": median("rollout_s"),
        "teacher_s": median("teacher_s"),
        "student_forward_s": median("student_s"),
        "backward_and_optimizer_s": statistics.median(rest),
        "rows": median("rows"),
        "step_s_per_row": statistics.median(s["step_s"] / max(s["rows"], 1) for s in counted),
        "measured_steps": len(counted),
        "steps": steps,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the study's training recipe")
    parser.add_argument("--model", help="model_name_or_path (default: the recipe's)")
    parser.add_argument("--steps", type=int, default=4, help="steps per arm, the first a warm-up (default 4)")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {list(ARMS)}")
    parser.add_argument("--output", help="write the report (JSON) here")
    args, recipe_overrides = parser.parse_known_args(argv)  # the rest: recipe flags, as `trl-sdar train` takes them
    if any(not a.startswith("--") for a in recipe_overrides[:1]):
        parser.error(f"unrecognised arguments {recipe_overrides}: recipe overrides are --flag value pairs.")
    names = [a for a in args.arms.split(",") if a]
    unknown = [a for a in names if a not in ARMS]
    if unknown or not names:
        parser.error(f"--arms {args.arms!r}: unknown {unknown}; expected names from {list(ARMS)}.")
    if args.steps < 2:
        parser.error(f"--steps {args.steps}: expected >= 2 (the first step is a warm-up, not measured).")
    recipe = ["--config", args.config, "--max_steps", str(args.steps)]
    recipe += (["--model_name_or_path", args.model] if args.model else []) + recipe_overrides
    info = machine()
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {name: build_arm(recipe, name, Path(tmp)) for name in names}
        turns, memory = Turns(len(names)), Memory()
        recorders = {n: _step_recorder(trainers[n], turns, i, memory, n, verbose=True) for i, n in enumerate(names)}
        for name in names:
            trainers[name].add_callback(recorders[name])
        start = time.perf_counter()
        run_side_by_side({name: trainers[name].train for name in names}, turns)
        wall = time.perf_counter() - start
    arms = {name: summarise(recorders[name].steps) for name in names}
    reference = names[0]
    for name in names:
        arms[name]["step_time_vs_" + reference] = ratio(arms[name]["step_s"], arms[reference]["step_s"])
        arms[name]["per_row_vs_" + reference] = ratio(arms[name]["step_s_per_row"], arms[reference]["step_s_per_row"])
    report = {"command": " ".join(["python", "benchmarks/study_step.py", *(argv or sys.argv[1:])]),
              "machine": info, "load_after": end_load(info), "wall_s": wall, "arms": arms}  # fmt: skip
    keys = ("step_s", "rollout_s", "teacher_s", "student_forward_s", "backward_and_optimizer_s", "rows")
    print("arm | " + " | ".join(keys) + f" | step / {reference} | per row / {reference}")
    for name, arm in arms.items():
        values = " | ".join(f"{arm[k]:.2f}" for k in keys)
        print(f"{name} | {values} | {arm['step_time_vs_' + reference]:.2f} | {arm['per_row_vs_' + reference]:.2f}")
    if args.output:
        write_json(args.output, report)
    return report


if __name__ == "__main__":
    main()
