"""`trl-sdar train`: one flat recipe (script + SDAR + model fields) → a trained SDAR (or baseline) checkpoint; or,
when the recipe asks for several processes, the same command re-launched under `accelerate launch`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from trl_sdar.commands.environments import build_env_rollout, training_tasks_record
from trl_sdar.commands.errors import RecipeError, one_line_errors
from trl_sdar.commands.output_paths import check_run_outputs, train_saying_how_to_resume
from trl_sdar.commands.recipe.args import SDARScriptArguments
from trl_sdar.models import resolve_model_path


def check_device(training_args) -> None:
    """One clear line for GPU-only options on a machine without CUDA."""
    import torch

    if torch.cuda.is_available():
        return
    if training_args.use_vllm:
        raise RecipeError("use_vllm: true needs a CUDA GPU and vllm installed; on CPU set use_vllm: false.")
    if training_args.bf16 or training_args.fp16:
        raise RecipeError("bf16/fp16 need a GPU; on CPU set bf16: false (and use_cpu: true).")


def import_reward_funcs(paths: list[str] | None) -> list:
    import importlib
    import sys

    if not paths:
        raise RecipeError("reward_funcs is required with a prompt dataset (dotted paths, e.g. my_lib.rewards.acc).")
    sys.path.insert(0, os.getcwd())  # like `trl grpo`: reward modules next to the recipe's working directory
    funcs = []
    for path in paths:
        module, _, name = path.rpartition(".")
        if not module:
            raise RecipeError(f"reward_funcs entry {path!r} is not a dotted import path (module.function).")
        funcs.append(getattr(importlib.import_module(module), name))
    return funcs


def build_trainer(script: SDARScriptArguments, training_args, model_args, trainer_class=None):
    """The trainer and tokenizer a parsed recipe describes (`trainer_class`: an `SDARTrainer` subclass, e.g. one a
    benchmark instruments; default `SDARTrainer`)."""
    from transformers import AutoTokenizer
    from trl import get_peft_config

    from trl_sdar.method.trainer import SDARTrainer

    check_device(training_args)
    model_path = resolve_model_path(model_args.model_name_or_path, full_model=True)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model_args.dtype is not None:
        training_args.model_init_kwargs = {**(training_args.model_init_kwargs or {}), "dtype": model_args.dtype}
    if script.env_name is not None:
        from trl_sdar.agent.rollout import env_reward

        rollout, dataset = build_env_rollout(script)
        reward_funcs = [env_reward]
        if script.balance_task_types:
            dataset = _balanced(dataset, training_args)
    else:
        from datasets import load_dataset

        rollout, reward_funcs = None, import_reward_funcs(script.reward_funcs)
        dataset = load_dataset(script.dataset_name, name=script.dataset_config)[script.dataset_train_split]
    trainer = (trainer_class or SDARTrainer)(
        model_path,
        reward_funcs,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        rollout_func=rollout,
    )
    return trainer, tokenizer


def _balanced(dataset, training_args):
    """The tasks round-robin over their types (`balance_task_types`), with TRL's shuffle off so the order holds."""
    from trl_sdar.envs.selection import interleave_task_types

    types = dataset["task_type"]
    training_args.shuffle_dataset = False
    print(f"[train] balance_task_types: {len(dataset)} tasks round-robin over {len(set(types))} task types "
          f"(seed {training_args.seed}); shuffle_dataset is off", flush=True)  # fmt: skip
    return dataset.select(interleave_task_types(types, training_args.seed))


def run_training(script: SDARScriptArguments, training_args, model_args) -> Path:
    """Build everything from the parsed recipe, train, save; returns the output folder."""
    resume = check_run_outputs(training_args.output_dir, training_args.resume_from_checkpoint, training_args.max_steps)
    trainer, tokenizer = build_trainer(script, training_args, model_args)
    train_saying_how_to_resume("train", trainer, training_args.output_dir, resume)
    output = Path(training_args.output_dir)
    trainer.save_model(str(output))
    checksums = _trainable_checksums(trainer)  # collective: every rank takes part
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(str(output))
        (output / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
        summary = {"num_processes": trainer.accelerator.num_processes, "trainable_checksum_per_rank": checksums}
        if script.env_name is not None:
            summary["train_tasks"] = training_tasks_record(script)  # on real data: the permutation's seed
        (output / "train_summary.json").write_text(json.dumps(summary, indent=1))
        trainer.accelerator.print(f"Model saved to {output}; metrics in {output / 'log_history.json'}.")
    return output


def _trainable_checksums(trainer) -> list[float]:
    """Sum of the trainable weights on each rank: equal values mean the ranks stayed in sync."""
    import torch

    params = [p.detach().float().sum() for p in trainer.model.parameters() if p.requires_grad]
    local = torch.stack(params).sum().reshape(1).to(trainer.accelerator.device)
    return trainer.accelerator.gather(local).tolist()


def main(argv: list[str]) -> None:
    """`trl-sdar train ARGS`: parse the recipe; train here, or hand off to `accelerate launch` when it asks for it."""
    from trl_sdar.commands.recipe.launch import LAUNCHED_ENV, launch_with_accelerate, parse_train_args
    from trl_sdar.method.finite_weights import NonFiniteWeightsError

    with one_line_errors("train", NonFiniteWeightsError):
        script, training, model, launch_args, cli_launch_args = parse_train_args(argv)
        if launch_args and os.environ.get(LAUNCHED_ENV) != "1":
            # before any process starts
            check_run_outputs(training.output_dir, training.resume_from_checkpoint, training.max_steps)
            launch_with_accelerate(argv, launch_args, cli_launch_args)
            return
        run_training(script, training, model)
