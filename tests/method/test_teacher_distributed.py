"""Teacher kinds under sharded training: ZeRO-3 with a fake of DeepSpeed's partitioning (CPU), real FSDP2 on two CPU
processes (gloo), and GPU-marked runs of `trl-sdar train` under DeepSpeed ZeRO-2/3 and FSDP2."""

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from trl_sdar import SDARConfig
from trl_sdar.method import teacher_sharding as sharding
from trl_sdar.method.teacher import TEACHER_EMA_FILE, Teacher

ROOT = Path(__file__).parents[2]


class FakeZero3:
    """DeepSpeed ZeRO-3 semantics on one process: a partitioned parameter's `.data` is an empty placeholder and its
    values live elsewhere; `GatheredParameters` fills `.data` inside the block and, with a modifier rank, keeps the
    block's writes on exit (DeepSpeed broadcasts rank 0's and re-partitions), else discards them."""

    def __init__(self):
        self.full: dict[int, torch.Tensor] = {}
        self.gathers: list[int] = []

    def partition(self, params) -> None:
        for p in params:
            if not hasattr(p, "ds_id"):
                self.full[id(p)] = p.data.clone()
                p.ds_id, p.ds_numel, p.ds_shape = len(self.full), p.numel(), tuple(p.shape)
                p.data = torch.empty(0, dtype=p.dtype)

    def value(self, p) -> torch.Tensor:
        return self.full[id(p)]

    @contextmanager
    def gather(self, params, modifier_rank):
        self.gathers.append(sum(p.ds_numel for p in params))
        for p in params:
            p.data = self.full[id(p)].clone()
        try:
            yield
        finally:
            for p in params:
                if modifier_rank is not None:
                    self.full[id(p)] = p.data.clone()
                p.data = torch.empty(0, dtype=p.dtype)


@pytest.fixture()
def zero3(monkeypatch):
    fake = FakeZero3()
    monkeypatch.setattr(sharding, "_zero3_gather", fake.gather)
    return fake


def _args(kind="ema", **overrides):
    return SDARConfig(output_dir="unused", use_cpu=True, bf16=False, report_to="none", teacher_model_kind=kind,
                      teacher_update_rate=0.25, **overrides)  # fmt: skip


def test_lora_ema_update_reaches_zero3_partitions(tiny_model_dir, zero3):
    # Before: teacher.lerp_ ran on the empty placeholders, a silent no-op: the EMA teacher never moved.
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, init_lora_weights=False)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config)
    teacher = Teacher(model, _args())  # LoRA parameters are created outside zero.Init: full at this point
    zero3.partition(model.parameters())  # the DeepSpeed engine partitions everything, the teacher adapter included
    pairs = teacher._adapter_pairs()
    start = {id(t): zero3.value(t).clone() for _, t in pairs}
    for student, _ in pairs:  # an optimizer step, on the partitions
        zero3.full[id(student)] += 1.0
    teacher.ema_update()
    for _, ema in pairs:
        assert torch.allclose(zero3.value(ema), start[id(ema)] + 0.25), "EMA must move the partitioned teacher"
        assert ema.data.numel() == 0  # partitioned again afterwards


class _Engine(nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def test_zero3_frozen_copy_is_reloaded_prepared_and_its_ema_gathered(tiny_model_dir, zero3, monkeypatch, tmp_path):
    # Before: the copy was deep-copied from the partitioned policy (empty placeholders) and never prepared.
    import trl.models
    from transformers import AutoModelForCausalLM

    prepared = []

    def fake_prepare_deepspeed(model, accelerator):
        zero3.partition(model.parameters())
        prepared.append(model)
        return _Engine(model).eval()

    monkeypatch.setattr(trl.models, "prepare_deepspeed", fake_prepare_deepspeed)
    monkeypatch.setattr(sharding, "GATHER_CHUNK_NUMEL", 10_000)
    plugin = SimpleNamespace(deepspeed_config={"zero_optimization": {"stage": 3}})
    accelerator = SimpleNamespace(distributed_type="DistributedType.DEEPSPEED", state=SimpleNamespace(
        deepspeed_plugin=plugin))  # fmt: skip
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    zero3.partition(policy.parameters())  # loaded under zero.Init
    teacher = Teacher(policy, _args(), accelerator=accelerator)
    assert prepared and isinstance(teacher.copy, _Engine) and teacher._copy_placed
    copy = dict(teacher.copy.module.named_parameters())
    for name, p in initial.named_parameters():
        assert torch.equal(zero3.value(copy[name]), p.detach()), name  # real weights, not copied placeholders

    students = dict(policy.named_parameters())
    for p in students.values():
        zero3.full[id(p)] += 1.0
    zero3.gathers.clear()
    teacher.ema_update()
    assert len(zero3.gathers) > 1 and max(zero3.gathers) < sum(p.numel() for p in initial.parameters())  # chunked
    for name, p in initial.named_parameters():
        assert torch.allclose(zero3.value(copy[name]), p.detach() + 0.25, atol=1e-6), name

    teacher.save(str(tmp_path), is_main_process=True)
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / TEACHER_EMA_FILE))
    assert all(torch.equal(saved[n], zero3.value(copy[n])) for n in copy)  # full tensors, not placeholders
    for p in copy.values():
        zero3.full[id(p)].zero_()
    assert teacher.load(str(tmp_path))
    assert all(torch.equal(saved[n], zero3.value(copy[n])) for n in copy)


def test_sharding_kind_is_read_from_the_accelerator():
    def acc(kind, **state):
        return SimpleNamespace(distributed_type=f"DistributedType.{kind}", state=SimpleNamespace(**state))

    ds = {"zero_optimization": {"stage": 2}}
    assert sharding.sharding_of(None) == "none" and sharding.sharding_of(acc("MULTI_GPU")) == "none"
    assert sharding.sharding_of(acc("DEEPSPEED", deepspeed_plugin=SimpleNamespace(deepspeed_config=ds))) == "deepspeed"
    assert sharding.sharding_of(acc("FSDP", fsdp_plugin=SimpleNamespace(fsdp_version=2))) == "fsdp2"
    with pytest.raises(ValueError, match="fsdp_version: 2"):
        sharding.frozen_copy(nn.Linear(2, 2), _args(), acc("FSDP", fsdp_plugin=SimpleNamespace(fsdp_version=1)))


def test_most_over_processes_is_the_largest_count_any_process_gives():
    others = [7, 2]  # what the other processes pass

    def gather(local):
        return torch.cat([local, torch.tensor(others, device=local.device)])

    most = sharding.most_over_processes(SimpleNamespace(device=torch.device("cpu"), gather=gather))
    assert most(3) == 7 and most(9) == 9
    assert set(sharding.COLLECTIVE_FORWARD) == {"zero3", "fsdp1", "fsdp2"}  # not "deepspeed" (ZeRO-0/1/2) or DDP


@pytest.mark.slow
def test_fsdp2_two_cpu_processes_meta_copy_ema_and_checkpoint(tiny_model_dir, tmp_path):
    # Real FSDP2 (torch fully_shard over gloo), accelerate's own preparation, rank 1 starting on the meta device.
    # Before: rank 1's copy stayed on meta (scoring failed to move it); without resharding, an EMA update after a
    # teacher pass wrote into the transient full tensors (size mismatch against the student's shard).
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           str(ROOT / "tests" / "method" / "_fsdp2_teacher_worker.py"), tiny_model_dir, str(tmp_path)]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert not got["copy_on_meta"] and got["copy_is_sharded"] and got["copy_equals_initial"], (rank, got)
        assert got["teacher_logits_equal_policy"], rank
        assert got["ema_error"] < 1e-6 and got["lora_ema_error"] < 1e-6, (rank, got)
        assert got["lora_pairs"] == 8 and got["lora_sharded"], (rank, got)
        assert got["saved_file"] and got["loaded"] and got["reload_equal"], (rank, got)


# --------------------------------------------------------------------------------------------------- on a GPU
def _gpu_run(tmp_path, accelerate_config: str, kind: str, peft: bool) -> Path:
    out = tmp_path / "run"
    recipe = str(ROOT / "tests" / "data" / "tiny_webshop.yaml")
    cmd = [sys.executable, "-m", "trl_sdar.cli", "train", "--config", recipe,
           "--output_dir", str(out), "--use_cpu", "false", "--bf16", "true", "--accelerate_config",
           str(ROOT / "recipes" / "accelerate" / f"{accelerate_config}.yaml"), "--num_processes", "1",
           "--teacher_model_kind", kind, "--teacher_update_rate", "0.5", "--save_strategy", "steps",
           "--save_steps", "1", "--learning_rate", "0.01", "--use_peft", str(peft).lower()]  # fmt: skip
    if peft:
        cmd += ["--lora_r", "4", "--lora_target_modules", "q_proj", "v_proj"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    return out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    "accelerate_config, peft",
    [("deepspeed_zero3", False), ("deepspeed_zero3", True), ("deepspeed_zero2", False), ("fsdp2", False),
     ("fsdp2", True)],
)  # fmt: skip
def test_ema_teacher_moves_by_the_ema_rule_on_gpu(tmp_path, accelerate_config, peft):
    if accelerate_config.startswith("deepspeed"):
        pytest.importorskip("deepspeed")
    from safetensors.torch import load_file

    out = _gpu_run(tmp_path, accelerate_config, "ema", peft)
    first, second = (load_file(str(out / f"checkpoint-{s}" / TEACHER_EMA_FILE)) for s in (1, 2))
    moved = [n for n in first if not torch.equal(first[n], second[n])]
    assert moved, "the EMA teacher must move between steps (ZeRO-3 placeholders made it a silent no-op)"
    if not peft:  # θ_T(2) = ½ θ_T(1) + ½ θ(2), θ from the step-2 checkpoint's (16-bit) model file
        student = load_file(str(out / "checkpoint-2" / "model.safetensors"))
        for name in moved:
            key = name if name in student else name.removeprefix("module.")
            expected = 0.5 * first[name].float() + 0.5 * student[key].float()
            assert torch.allclose(second[name].float(), expected, atol=2e-2, rtol=2e-2), name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("accelerate_config", ["deepspeed_zero3", "fsdp2"])
def test_base_teacher_trains_under_sharding_on_gpu(tmp_path, accelerate_config):
    if accelerate_config.startswith("deepspeed"):
        pytest.importorskip("deepspeed")
    out = _gpu_run(tmp_path, accelerate_config, "base", False)
    steps = [h for h in json.loads((out / "log_history.json").read_text()) if "loss" in h]
    assert len(steps) == 2 and all(abs(h["sdar/teacher_gap_mean"]) < 50 for h in steps)
    assert all(h["sdar/nonfinite_tokens"] == 0 for h in steps)


def test_lora_ema_under_fsdp1_is_refused_with_the_fix(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"]))
    fsdp1 = SimpleNamespace(distributed_type="DistributedType.FSDP", state=SimpleNamespace(
        fsdp_plugin=SimpleNamespace(fsdp_version=1)))  # fmt: skip
    with pytest.raises(ValueError, match="fsdp_version: 2"):
        Teacher(model, _args(), accelerator=fsdp1)
