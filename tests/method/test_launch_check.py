"""A multi-process launch must give a distributed trainer; an FSDP config that accelerate runs unsharded is said."""

import logging
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_sdar import SDARConfig, SDARTrainer, env_reward
from trl_sdar.agent.rollout import EnvRollout, RolloutSettings
from trl_sdar.method.launch_check import check_launched_processes, warn_if_sharding_dropped
from trl_sdar.testing import ScriptedEnv


@pytest.mark.skipif(torch.cuda.is_available(), reason="reproduces GPU settings on a machine without GPUs")
def test_two_launched_processes_that_would_each_train_alone_are_refused(tiny_model_dir, tmp_path, monkeypatch):
    # GPU settings (use_cpu false) on a machine without GPUs, launched as 2 processes: transformers leaves each one
    # on its own (parallel_mode not_parallel) and only logs a notice
    monkeypatch.setenv("WORLD_SIZE", "2")
    rollout = EnvRollout(ScriptedEnv.counter, settings=RolloutSettings(max_turns=2))
    config = SDARConfig(output_dir=str(tmp_path), use_cpu=False, bf16=False, report_to="none", num_generations=2,
                        per_device_train_batch_size=2, max_completion_length=8)  # fmt: skip
    with pytest.raises(RuntimeError, match=r"launched as 2 processes, but the trainer is not distributed.*use_cpu"):
        SDARTrainer(AutoModelForCausalLM.from_pretrained(tiny_model_dir), env_reward, args=config,
                    train_dataset=rollout.dataset(range(2)), rollout_func=rollout,
                    processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))  # fmt: skip


@pytest.mark.parametrize(("launched", "world_size", "refused"), [(1, 1, False), (2, 2, False), (2, 1, True),
                                                                  (4, 2, True)])  # fmt: skip
def test_launch_and_trainer_must_agree_on_the_process_count(monkeypatch, launched, world_size, refused):
    monkeypatch.setenv("WORLD_SIZE", str(launched))
    args = SimpleNamespace(world_size=world_size, parallel_mode=SimpleNamespace(value="not_parallel"))
    if refused:
        with pytest.raises(RuntimeError, match=f"launched as {launched} processes"):
            check_launched_processes(args)
    else:
        check_launched_processes(args)


@pytest.mark.parametrize(("kind", "warned"), [("DistributedType.MULTI_CPU", True), ("DistributedType.FSDP", False)])
def test_an_fsdp_config_run_without_sharding_is_said(monkeypatch, caplog, kind, warned):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with caplog.at_level(logging.WARNING, logger="trl_sdar"):
        warn_if_sharding_dropped(SimpleNamespace(distributed_type=kind))
    assert ("asks for FSDP, but accelerate runs this MULTI_CPU" in caplog.text) is warned


def test_one_process_tools_refuse_a_multi_process_launch(monkeypatch):
    from trl_sdar.method.launch_check import refuse_multi_process

    refuse_multi_process("benchmarks/generation.py")  # run directly: fine
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit, match=r"benchmarks/generation.py: launched as 2 processes, but it runs in one"):
        refuse_multi_process("benchmarks/generation.py")
