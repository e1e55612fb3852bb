"""`trl-sdar train`: one flat recipe (script + SDAR + model fields) → a trained SDAR (or baseline) checkpoint.

Pieces are small functions so that tests and other scripts (quickstart, benchmarks) can reuse them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .script_args import SDARScriptArguments

BUILTIN_MODELS = ("builtin:tiny", "builtin:smollm2")


class RecipeError(ValueError):
    """A recipe or command-line value that cannot work; the message names the field and the fix."""


def resolve_model_path(name: str | None) -> str:
    """A local model folder for `model_name_or_path`: built-in aliases, local folders, or (online) a hub id."""
    if not name:
        raise RecipeError(
            "model_name_or_path is required (a local folder, a hub id, or builtin:tiny|builtin:smollm2|"
            "builtin:scratch)."
        )
    if name == "builtin:tiny":
        from .pretrained import default_cache_dir
        from .testing import make_tiny_model_dir

        folder = default_cache_dir() / "models" / "tiny-qwen2"
        return str(folder if (folder / "config.json").exists() else make_tiny_model_dir(folder))
    if name == "builtin:smollm2":
        from .pretrained import smollm2_model_dir

        return str(smollm2_model_dir())
    if name == "builtin:scratch":
        from .scratch_model import scratch_model_dir

        return str(scratch_model_dir())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise RecipeError(f"model_name_or_path={name!r} is a folder without config.json: not a model folder.")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise RecipeError(f"model_name_or_path={name!r} does not exist. Give an existing model folder.")
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise RecipeError(
            f"model_name_or_path={name!r} is a hub id but HF_HUB_OFFLINE is set: download it where there is network "
            f"(`huggingface-cli download {name} --local-dir DIR`) and pass the folder, or use builtin:smollm2."
        )
    return name


def check_device(training_args) -> None:
    """One clear line for GPU-only options on a machine without CUDA."""
    import torch

    if torch.cuda.is_available():
        return
    if training_args.use_vllm:
        raise RecipeError("use_vllm: true needs a CUDA GPU and vllm installed; on CPU set use_vllm: false.")
    if training_args.bf16 or training_args.fp16:
        raise RecipeError("bf16/fp16 need a GPU; on CPU set bf16: false (and use_cpu: true).")


def env_kwargs(
    env_name: str,
    *,
    source: str = "builtin",
    data_dir: str | None = None,
    difficulty: str = "default",
    retriever_url: str | None = None,
    max_task_id: int = 0,
    questions_path: str | None = None,
) -> dict:
    """Constructor arguments of an environment from recipe / CLI values (`max_task_id`: highest id to be used)."""
    real = source == "real"
    if env_name == "alfworld":
        from .envs.alfworld_games import DIFFICULTY_LEVELS

        kwargs = {"source": source, "difficulty": DIFFICULTY_LEVELS[difficulty]}
        return {**kwargs, "data_dir": data_dir} if real else kwargs
    if env_name == "webshop":
        from .envs.webshop_catalog import BUILTIN_NUM_GOALS

        return (
            {"source": "real", "data_dir": data_dir}
            if real
            else {"num_goals": max(BUILTIN_NUM_GOALS, max_task_id + 1)}
        )
    kwargs = {"retriever_url": retriever_url, "questions_path": questions_path}
    return {**kwargs, "corpus_path": data_dir} if real else kwargs


def build_skill_selector(script: SDARScriptArguments):
    """The privileged-context function Task → skills text, or None (`skills: none`)."""
    if script.skills == "none":
        return None
    from .skills import SkillSelector, load_builtin_skills, load_skill_library

    library = load_skill_library(script.skills_path) if script.skills_path else load_builtin_skills(script.env_name)
    return SkillSelector(library, mode=script.skills, top_k=script.skills_top_k)


def build_env_rollout(script: SDARScriptArguments):
    """EnvRollout + its training dataset (tasks `train_task_start …`)."""
    from .agent.rollout import EnvRollout, RolloutSettings
    from .envs import make_env

    kwargs = env_kwargs(
        script.env_name,
        source=script.env_source,
        data_dir=script.env_data_dir,
        difficulty=script.env_difficulty,
        retriever_url=script.retriever_url,
        questions_path=script.questions_path,
        max_task_id=script.train_task_start + script.num_train_tasks - 1,
    )
    settings = RolloutSettings(
        max_turns=script.max_turns,
        max_turn_tokens=script.max_turn_tokens,
        step_timeout_s=script.env_step_timeout,
        num_workers=script.env_workers,
        rollout_unit=script.rollout_unit,
        history_window=script.history_window,
        parser=script.parser,
        advantage_over=script.advantage_over,
    )
    rollout = EnvRollout(
        lambda: make_env(script.env_name, subprocess=script.subprocess_envs, **kwargs),
        skills=build_skill_selector(script),
        settings=settings,
        student_sees_skills=script.student_sees_skills,
    )
    task_ids = range(script.train_task_start, script.train_task_start + script.num_train_tasks)
    dataset = rollout.dataset(task_ids, script.task_types)
    if script.task_types:
        print(
            f"[train] task_types={script.task_types}: {len(dataset)} of the {len(task_ids)} training tasks "
            f"(ids {task_ids.start}..{task_ids.stop - 1})",
            flush=True,
        )
    return rollout, dataset


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


def run_training(script: SDARScriptArguments, training_args, model_args) -> Path:
    """Build everything from the parsed recipe, train, save; returns the output folder."""
    from transformers import AutoTokenizer
    from trl import get_peft_config

    from .trainer import SDARTrainer

    check_device(training_args)
    model_path = resolve_model_path(model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model_args.dtype is not None:
        training_args.model_init_kwargs = {**(training_args.model_init_kwargs or {}), "dtype": model_args.dtype}
    if script.env_name is not None:
        from .agent.rollout import env_reward

        rollout, dataset = build_env_rollout(script)
        reward_funcs = [env_reward]
    else:
        from datasets import load_dataset

        rollout, reward_funcs = None, import_reward_funcs(script.reward_funcs)
        dataset = load_dataset(script.dataset_name, name=script.dataset_config)[script.dataset_train_split]
    trainer = SDARTrainer(
        model_path,
        reward_funcs,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        rollout_func=rollout,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    output = Path(training_args.output_dir)
    trainer.save_model(str(output))
    checksums = _trainable_checksums(trainer)  # collective: every rank takes part
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(str(output))
        (output / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
        summary = {"num_processes": trainer.accelerator.num_processes, "trainable_checksum_per_rank": checksums}
        (output / "train_summary.json").write_text(json.dumps(summary, indent=1))
        trainer.accelerator.print(f"Model saved to {output}; metrics in {output / 'log_history.json'}.")
    return output


def _trainable_checksums(trainer) -> list[float]:
    """Sum of the trainable weights on each rank: equal values mean the ranks stayed in sync."""
    import torch

    params = [p.detach().float().sum() for p in trainer.model.parameters() if p.requires_grad]
    local = torch.stack(params).sum().reshape(1).to(trainer.accelerator.device)
    return trainer.accelerator.gather(local).tolist()
