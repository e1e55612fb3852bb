"""One stage of the GPU check (scripts/gpu_check.sh), run in a process of its own by scripts/gpu_check_run.py.

Each subcommand does its work, then writes a JSON file (`--json`) with `ok` (bool), `message` (one line) and
`numbers` (the key numbers the report shows). A crash still writes the file, with the exception as the message.

    env    versions of the packages the check needs, the device, and whether bf16 works there
    model  the tiny chat model built in code (trl_sdar.models.tiny); with --wide also a head_dim-64 copy for vLLM
    train  a few LoRA SDAR steps through `trl-sdar train` on the built-in Search-QA (bf16 on CUDA, fp32 on CPU)
    eval   `trl-sdar eval` of a trained adapter on the built-in Search-QA

train and eval call `trl_sdar.cli.main` in this process, so the peak CUDA memory they report is the command's own.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import statistics
import time
import traceback
from pathlib import Path

PACKAGES = ("torch", "transformers", "accelerate", "peft", "pyarrow", "pytest", "trl", "datasets", "bm25s",
            "rapidfuzz")  # fmt: skip
NEEDED = ("torch", "transformers", "accelerate", "peft", "trl", "datasets", "bm25s")  # rapidfuzz: WebShop (pytest)
ENV_NAME = "search_qa"  # built-in, needs bm25s only (no alfworld engine, no rapidfuzz)


def _peak_cuda_mib() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"peak_cuda_allocated_mib": None, "peak_cuda_reserved_mib": None}
    return {
        "peak_cuda_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "peak_cuda_reserved_mib": round(torch.cuda.max_memory_reserved() / 2**20, 1),
    }


def _peak_text(numbers: dict) -> str:
    peak = numbers.get("peak_cuda_allocated_mib")
    return "" if peak is None else f", peak CUDA {peak} MiB allocated"


def _run_cli(argv: list[str]) -> str | None:
    """Run one `trl-sdar` command here; returns None on success, else the one-line reason."""
    from trl_sdar.cli import main

    try:
        main(argv)
    except SystemExit as stop:  # the commands end bad input with SystemExit("trl-sdar …: error: …")
        if stop.code not in (None, 0):
            return str(stop.code)
    return None


# ------------------------------------------------------------------------------------------------------------ env
def stage_env(args) -> tuple[bool, str, dict]:
    import platform
    import sys

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = getattr(importlib.import_module(name), "__version__", "?")
        except Exception as error:  # noqa: BLE001 (any import failure is a missing package here)
            versions[name] = None if isinstance(error, ModuleNotFoundError) else f"import error: {error}"
    versions["vllm"] = _vllm_version()
    numbers: dict = {"python": platform.python_version(), "versions": versions, "device": args.device}
    import torch

    numbers["torch_cuda"] = torch.version.cuda
    numbers["cuda_available"] = torch.cuda.is_available()
    problems = [f"{name} is not importable ({versions[name] or 'not installed'})" for name in NEEDED
                if not isinstance(versions[name], str) or versions[name].startswith("import error")]  # fmt: skip
    if args.device == "cuda":
        if not torch.cuda.is_available():
            problems.append(f"torch {torch.__version__} sees no CUDA device (torch.version.cuda={torch.version.cuda})")
        else:
            index = torch.cuda.current_device()
            props = torch.cuda.get_device_properties(index)
            numbers.update(
                gpu=torch.cuda.get_device_name(index),
                gpu_memory_gib=round(props.total_memory / 2**30, 1),
                compute_capability=f"{props.major}.{props.minor}",
                bf16_supported=torch.cuda.is_bf16_supported(),
                device_count=torch.cuda.device_count(),
            )
            if not numbers["bf16_supported"]:
                problems.append(f"{numbers['gpu']} does not support bf16 (the check trains in bf16)")
    numbers["executable"] = sys.executable
    if problems:
        hint = " Bring the missing packages as wheels: bash scripts/gpu_check_wheels.sh, then --wheels DIR."
        return False, "; ".join(problems) + (hint if any("not importable" in p for p in problems) else ""), numbers
    where = numbers.get("gpu", "CPU (dry run)")
    return True, f"python {numbers['python']}, torch {versions['torch']}, trl {versions['trl']} on {where}", numbers


def _vllm_version() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return None
    from importlib.metadata import version

    return version("vllm")  # importing vllm itself takes seconds and may initialise CUDA


# ---------------------------------------------------------------------------------------------------------- model
def stage_model(args) -> tuple[bool, str, dict]:
    from trl_sdar.models.tiny import make_tiny_model_dir

    root = Path(args.out)
    tiny = make_tiny_model_dir(root / "tiny")
    numbers = {"tiny": str(tiny), "tiny_weight_bytes": _weight_bytes(tiny), "tiny_params": _params(tiny)}
    if args.wide:
        wide = _make_wide_copy(tiny, root / "tiny-wide")
        numbers.update(wide=str(wide), wide_weight_bytes=_weight_bytes(wide), wide_params=_params(wide))
    biggest = max(v for k, v in numbers.items() if k.endswith("_weight_bytes"))
    ok = biggest <= 8 * 2**20
    message = f"tiny Qwen2 built in code: {numbers['tiny_params']:,} parameters, {numbers['tiny_weight_bytes']:,} B"
    if args.wide:
        message += f"; vLLM copy (head_dim 64): {numbers['wide_params']:,} parameters"
    return ok, message if ok else f"a weight file is {biggest:,} B (over 8 MiB)", numbers


def _make_wide_copy(tiny: Path, out: Path) -> Path:
    """The tiny model's tokenizer with a wider random Qwen2 (head_dim 64), saved in bf16: vLLM's attention kernels
    take head sizes such as 64 or 128, not the tiny model's 16."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _weight_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def _params(folder: Path) -> int:
    from safetensors import safe_open

    total = 0
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), "pt") as handle:
            total += sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())
    return total


# ---------------------------------------------------------------------------------------------------------- train
def train_recipe(device: str, unit: str, generation: str, steps: int) -> dict:
    """The recipe of one training stage: LoRA SDAR (λ 0.01, β 5, live teacher with the built-in skills) on the
    built-in Search-QA; bf16 weights and autocast on CUDA, fp32 on the CPU (bf16 is far slower there)."""
    cuda = device == "cuda"
    recipe = {
        "env_name": ENV_NAME, "num_train_tasks": 8, "max_turns": 2, "max_turn_tokens": 16, "rollout_unit": unit,
        "history_window": 2, "skills": "rules", "sdar_coef": 0.01, "sdar_gate_beta": 5.0, "teacher_model_kind": "live",
        "use_peft": True, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05,
        "lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "gradient_checkpointing": True, "num_generations": 4 if cuda else 2,
        "per_device_train_batch_size": 8 if cuda else 4, "max_completion_length": 256, "max_steps": steps,
        "learning_rate": 1e-3, "logging_steps": 1, "report_to": "none", "save_strategy": "no", "seed": 0,
        "use_cpu": not cuda, "bf16": cuda, "dtype": "bfloat16" if cuda else "float32",
        "use_vllm": generation == "vllm",
    }  # fmt: skip
    if unit == "turn":
        recipe["max_tokens_per_backward"] = 512  # several backward passes per micro-batch: the split-pass path
    if generation == "vllm":
        recipe.update(vllm_mode="colocate", vllm_gpu_memory_utilization=0.25, vllm_max_model_length=4096,
                      vllm_enable_sleep_mode=False)  # fmt: skip
    return recipe


def stage_train(args) -> tuple[bool, str, dict]:
    import torch

    out = Path(args.output_dir)
    recipe_path = out.parent / f"{out.name}.recipe.json"  # JSON is YAML: TrlParser reads it
    recipe = train_recipe(args.device, args.unit, args.generation, args.steps)
    recipe_path.write_text(json.dumps(recipe, indent=1))
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    error = _run_cli(["train", "--config", str(recipe_path), "--model_name_or_path", args.model,
                      "--output_dir", str(out)])  # fmt: skip
    numbers = {"unit": args.unit, "generation": args.generation, "precision": recipe["dtype"]}
    numbers.update(steps_asked=args.steps, command_s=round(time.perf_counter() - start, 1), **_peak_cuda_mib())
    if error:
        return False, error, numbers
    numbers.update(_train_numbers(out))
    problems = _train_problems(numbers, args)
    if problems:
        return False, "; ".join(problems), numbers
    message = f"{numbers['steps_done']} steps, losses finite (last {numbers['last_loss']:.3g}), "
    message += f"gate {numbers['gate_mean_last']:.3f}" + _peak_text(numbers)
    return True, message, numbers


def _train_numbers(out: Path) -> dict:
    history = json.loads((out / "log_history.json").read_text())
    steps = [h for h in history if "loss" in h]
    losses = [h["loss"] for h in steps]
    numbers = {
        "steps_done": len(steps),
        "losses": losses,
        "loss_finite": all(math.isfinite(v) for v in losses) and bool(losses),
        "grad_norm_finite": all(math.isfinite(h.get("grad_norm", 0.0)) for h in steps),
        "last_loss": losses[-1] if losses else None,
        "nonfinite_steps_skipped": sum(h.get("train/nonfinite_step_skipped", 0.0) for h in steps),
        "median_step_s": statistics.median(h["step_time"] for h in steps) if steps else None,
        "gate_mean_last": steps[-1].get("sdar/gate_mean") if steps else None,
        "teacher_gap_mean_last": steps[-1].get("sdar/teacher_gap_mean") if steps else None,
        "distilled_tokens": sum(h.get("sdar/distilled_tokens", 0.0) for h in steps),
        "context_tokens": sum(h.get("sdar/context_tokens", 0.0) for h in steps),
        "env_success_mean": statistics.fmean(h.get(f"env/{ENV_NAME}/success", 0.0) for h in steps) if steps else None,
        "turn_rows": sum(h.get("turn/rows", 0.0) for h in steps) or None,
    }
    adapter = out / "adapter_model.safetensors"
    numbers["adapter_saved"] = adapter.exists()
    if adapter.exists():
        from safetensors.torch import load_file

        weights = load_file(str(adapter))
        lora_b = [t for k, t in weights.items() if "lora_B" in k]
        numbers["adapter_dtype"] = str(next(iter(weights.values())).dtype).removeprefix("torch.")
        numbers["lora_b_abs_max"] = max((t.float().abs().max().item() for t in lora_b), default=0.0)
    return numbers


def _train_problems(numbers: dict, args) -> list[str]:
    problems = []
    if numbers["steps_done"] != args.steps:
        problems.append(f"{numbers['steps_done']} of {args.steps} steps logged")
    if not numbers["loss_finite"] or not numbers["grad_norm_finite"]:
        problems.append(f"non-finite loss or grad norm: losses {numbers['losses']}")
    if numbers["nonfinite_steps_skipped"]:
        problems.append(f"{numbers['nonfinite_steps_skipped']:g} steps skipped as non-finite")
    if not numbers["distilled_tokens"] or not numbers["context_tokens"]:
        problems.append("the teacher distilled no tokens (sdar/distilled_tokens or sdar/context_tokens is 0)")
    if not numbers["adapter_saved"]:
        problems.append("no LoRA adapter saved (adapter_model.safetensors missing)")
    elif not numbers["lora_b_abs_max"]:
        problems.append("the LoRA adapter did not move (every lora_B is still 0)")
    if args.device == "cuda" and not numbers["peak_cuda_allocated_mib"]:
        problems.append("no CUDA memory was allocated: training did not run on the GPU")
    return problems


# ----------------------------------------------------------------------------------------------------------- eval
def stage_eval(args) -> tuple[bool, str, dict]:
    import torch

    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    report_path = Path(args.output)
    seeds = [0, 1]
    start = time.perf_counter()
    error = _run_cli(["eval", "--model", args.model, "--env", ENV_NAME, "--num-tasks", str(args.num_tasks),
                      "--seeds", ",".join(map(str, seeds)), "--max-turns", "2", "--max-turn-tokens", "16",
                      "--batch-size", "16", "--output", str(report_path)])  # fmt: skip
    numbers = {"model": args.model, "command_s": round(time.perf_counter() - start, 1), **_peak_cuda_mib()}
    if error:
        return False, error, numbers
    report = json.loads(report_path.read_text())
    episodes = sum(len(s["episodes"]) for s in report["per_seed"])
    numbers.update(
        episodes=episodes, success_rate=report["success_rate"], mean_score=report["mean_score"],
        valid_format_rate=report["valid_format_rate"], eval_seconds=report["seconds"],
        rollout_unit=report["agent_loop"]["rollout_unit"],
    )  # fmt: skip
    problems = []
    if episodes != args.num_tasks * len(seeds):
        problems.append(f"{episodes} episodes played, expected {args.num_tasks * len(seeds)}")
    if not 0.0 <= report["success_rate"] <= 1.0:
        problems.append(f"success_rate {report['success_rate']} outside [0, 1]")
    if args.device == "cuda" and not numbers["peak_cuda_allocated_mib"]:
        problems.append("no CUDA memory was allocated: evaluation did not run on the GPU")
    if problems:
        return False, "; ".join(problems), numbers
    message = f"{episodes} episodes, success {report['success_rate']:.3f}, "
    message += f"valid format {report['valid_format_rate']:.3f}" + _peak_text(numbers)
    return True, message, numbers


# ----------------------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    for name in ("env", "model", "train", "eval"):
        p = sub.add_parser(name)
        p.add_argument("--json", required=True, help="write the stage result here")
        p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    sub.choices["model"].add_argument("--out", required=True)
    sub.choices["model"].add_argument("--wide", action="store_true", help="also the head_dim-64 copy for vLLM")
    train = sub.choices["train"]
    train.add_argument("--model", required=True)
    train.add_argument("--unit", choices=["episode", "turn"], required=True)
    train.add_argument("--generation", choices=["hf", "vllm"], default="hf")
    train.add_argument("--steps", type=int, default=3)
    train.add_argument("--output_dir", required=True)
    evaluation = sub.choices["eval"]
    evaluation.add_argument("--model", required=True)
    evaluation.add_argument("--num-tasks", type=int, default=8)
    evaluation.add_argument("--output", required=True)
    return parser


STAGES = {"env": stage_env, "model": stage_model, "train": stage_train, "eval": stage_eval}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        ok, message, numbers = STAGES[args.stage](args)
    except Exception as error:  # noqa: BLE001 (the report must say what broke, whatever it was)
        traceback.print_exc()
        ok, message, numbers = False, f"{type(error).__name__}: {error}".splitlines()[0], {}
    Path(args.json).write_text(json.dumps({"ok": ok, "message": message, "numbers": numbers}, indent=1, default=str))
    print(f"[gpu_check:{args.stage}] {'ok' if ok else 'FAILED'}: {message}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
