"""The overhead benchmark's arms: `grpo` and the SDAR arms, each an `SDARTrainer` of its own that times its teacher
passes and rollouts, trained side by side one step at a time; each arm's numbers summarised."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

from harness import Memory, Turns, measured, resident_mb, run_side_by_side, sync, timed
from overhead_layout import LAYOUTS, length_reward

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def arm_names(settings) -> list[str]:
    names = ["grpo"] + [f"sdar-{k}" for k in settings.kind_list()]
    if settings.unshared:
        names += [f"sdar-{k}-unshared" for k in settings.kind_list()]
    return names


def _timed_trainer_class():
    """`SDARTrainer` that times its teacher passes and rollouts and keeps its first rollout batch."""
    from trl_sdar import SDARTrainer

    class TimedSDARTrainer(SDARTrainer):
        def _bench(self) -> dict[str, Any]:
            if not hasattr(self, "_bench_state"):
                self._bench_state = {"teacher_s": 0.0, "rollout_s": 0.0, "first_batch": None}
            return self._bench_state

        def _teacher_logps(self, inputs, batch_size=None):
            out, seconds = timed(super()._teacher_logps, inputs, batch_size=batch_size)
            self._bench()["teacher_s"] += seconds
            return out

        def _generate_and_score_completions(self, inputs):
            bench = self._bench()
            teacher_before = bench["teacher_s"]
            out, seconds = timed(super()._generate_and_score_completions, inputs)
            bench["rollout_s"] += seconds - (bench["teacher_s"] - teacher_before)
            if bench["first_batch"] is None:
                bench["first_batch"] = out
            return out

    return TimedSDARTrainer


def build_trainer(arm: str, model_dir: str, settings, output_dir: str):
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_sdar import SDARConfig

    cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if cuda else torch.float32)
    kind = arm.split("-")[1] if arm != "grpo" else "live"
    layout = LAYOUTS[settings.layout](tokenizer, settings)
    args = SDARConfig(
        output_dir=output_dir,
        sdar_coef=0.0 if arm == "grpo" else 0.01,
        teacher_model_kind=kind,
        teacher_share_prefix=not arm.endswith("-unshared"),
        use_cpu=not cuda,
        bf16=cuda,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        logging_strategy="no",
        gradient_checkpointing=False,
        max_steps=settings.steps,
        per_device_train_batch_size=settings.batch,
        num_generations=settings.num_generations,
        max_completion_length=settings.max_completion_length,
        generation_kwargs={"min_new_tokens": settings.max_completion_length},  # same work for every arm
        learning_rate=1e-5 if settings.model == "smollm2" else 1e-3,
        seed=settings.seed,
        **layout.config,
    )
    lora = None
    if settings.finetune == "lora":
        lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    kwargs = {"reward_funcs": length_reward, **layout.trainer}
    return _timed_trainer_class()(
        model, args=args, train_dataset=layout.dataset, processing_class=tokenizer, peft_config=lora, **kwargs
    )


def _step_recorder(trainer, turns: Turns, index: int, memory: Memory, name: str, verbose: bool):
    """A callback that waits for the arm's turn before each step, and records the step's time, transient memory peak
    and the change in each number the trainer's `_bench()` keeps (teacher and rollout seconds, and whatever a
    subclass adds) when it ends."""
    from transformers import TrainerCallback

    class StepRecorder(TrainerCallback):
        def __init__(self):
            self.steps: list[dict[str, float]] = []
            self._start, self._marks = 0.0, {}

        def on_step_begin(self, args, state, control, **kwargs):
            turns.wait(index)
            memory.begin()
            self._marks = {k: v for k, v in trainer._bench().items() if isinstance(v, int | float)}
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            sync()
            elapsed, peak, bench = time.perf_counter() - self._start, memory.end(), trainer._bench()
            changes = {k: bench[k] - mark for k, mark in self._marks.items()}  # teacher_s, rollout_s, ...
            self.steps.append({"begin_s": self._start, "step_s": elapsed, **changes, "transient_mb": peak})
            if verbose:
                step = self.steps[-1]
                print(
                    f"[bench] {name} step {len(self.steps)}: {elapsed:.1f} s (teacher {step['teacher_s']:.1f} s, "
                    f"rollout {step['rollout_s']:.1f} s, step peak {peak:.0f} MB)",
                    file=sys.stderr,
                    flush=True,
                )
            turns.done_step(index)

    return StepRecorder()


def run_arms(model_dir: str, settings, workdir: Path, verbose: bool = False):
    """Build every arm, then train them all, one step at a time in turn; return each arm's raw numbers."""
    names = arm_names(settings)
    trainers = {name: build_trainer(name, model_dir, settings, str(workdir / name)) for name in names}
    turns, memory = Turns(len(names)), Memory()
    recorders = {name: _step_recorder(trainers[name], turns, i, memory, name, verbose) for i, name in enumerate(names)}
    for name in names:
        trainers[name].add_callback(recorders[name])
    run_side_by_side({name: trainers[name].train for name in names}, turns)
    return {name: summarise(recorders[name].steps, trainers[name]) for name in names}, trainers


def summarise(steps: list[dict[str, float]], trainer) -> dict[str, Any]:
    counted = measured(steps)  # the first step is the warm-up
    step_total = sum(s["step_s"] for s in counted)
    teacher_total = sum(s["teacher_s"] for s in counted)
    resident = resident_mb(trainer)
    transient = statistics.median(s["transient_mb"] for s in counted)
    return {
        "step_time_s": statistics.median(s["step_s"] for s in counted),
        "teacher_time_s": statistics.median(s["teacher_s"] for s in counted),
        "rollout_time_s": statistics.median(s["rollout_s"] for s in counted),
        "teacher_share": teacher_total / step_total if step_total > 0 else 0.0,
        "resident_mb": resident,
        "transient_mb": transient,
        "peak_mem_mb": resident + transient,
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "measured_steps": len(counted),
        "steps": steps,
    }
