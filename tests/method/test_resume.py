"""A run interrupted at step k and resumed from its checkpoint continues exactly as the uninterrupted run: student
weights, the EMA teacher, optimizer, scheduler, RNG (sampling) and data order, compared through weights and metrics."""

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from trl_sdar import SDARConfig, SDARTrainer
from trl_sdar.method.teacher import TEACHER_EMA_FILE

STEPS, STOP = 4, 2
COMPARED = ("loss", "reward", "learning_rate", "grad_norm", "sdar/gate_mean", "sdar/teacher_gap_mean", "sdar/loss")


def length_reward(completions, **kwargs):
    return [float(len(c[0]["content"]) % 5) for c in completions]


class _StopAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True  # the "kill" right after the step-k checkpoint


def _trainer(tiny_model_dir, out, peft: bool, **overrides):
    from peft import LoraConfig

    rows = [{"prompt": [{"role": "user", "content": f"task {i}: clean mug"}], "privileged_context": "rinse it"}
            for i in range(8)]  # 4 steps per epoch: the interruption is mid-epoch  # fmt: skip
    args = SDARConfig(
        output_dir=str(out), use_cpu=True, bf16=False, report_to="none", num_generations=2,
        per_device_train_batch_size=4, max_completion_length=6, gradient_checkpointing=False, learning_rate=5e-3,
        lr_scheduler_type="linear", warmup_steps=1, logging_steps=1, max_steps=STEPS, save_strategy="steps",
        save_steps=STOP, seed=11, data_seed=5, teacher_model_kind="ema", teacher_update_rate=0.3, sdar_coef=0.5,
        **overrides,
    )  # fmt: skip
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0) if peft else None
    return SDARTrainer(AutoModelForCausalLM.from_pretrained(tiny_model_dir), length_reward, args,
                       Dataset.from_list(rows), processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
                       peft_config=lora)  # fmt: skip


def _weights(trainer) -> dict[str, torch.Tensor]:
    student = {f"student/{n}": p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    teacher = {f"teacher/{n}": p.detach().clone() for n, p in trainer.teacher._ema_named()}
    assert student and teacher
    return {**student, **teacher}


def _steps(trainer) -> dict[int, dict]:
    return {h["step"]: {k: h[k] for k in COMPARED if k in h} for h in trainer.state.log_history if "loss" in h}


@pytest.mark.parametrize(
    "peft, overrides",
    [(False, {}), (True, {}), (False, {"steps_per_generation": 4})],
    ids=["full-copy-ema", "lora-adapter-ema", "inside-a-generation-window"],
)
def test_interrupted_and_resumed_run_equals_the_uninterrupted_run(tiny_model_dir, tmp_path, peft, overrides):
    # steps_per_generation=4: one generation serves steps 1-4, the checkpoint at step 2 falls inside it; before
    # the rollout buffer was saved, the resumed run generated new rollouts at step 3 (different loss and reward).
    whole = _trainer(tiny_model_dir, tmp_path / "whole", peft, **overrides)
    whole.train()
    expected_weights, expected_steps = _weights(whole), _steps(whole)

    cut = _trainer(tiny_model_dir, tmp_path / "cut", peft, **overrides)
    cut.add_callback(_StopAt(STOP))
    cut.train()
    checkpoint = tmp_path / "cut" / f"checkpoint-{STOP}"
    assert cut.state.global_step == STOP and (checkpoint / TEACHER_EMA_FILE).is_file()
    interrupted = _weights(cut)

    resumed = _trainer(tiny_model_dir, tmp_path / "cut", peft, **overrides)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    got_weights, got_steps = _weights(resumed), _steps(resumed)

    assert sorted(got_steps) == list(range(1, STEPS + 1))
    assert got_steps == expected_steps  # metrics of the steps after the resume, bit for bit
    teacher = [n for n in expected_weights if n.startswith("teacher/")]
    moved = [n for n in teacher if not torch.equal(interrupted[n], got_weights[n])]
    assert moved, "the EMA teacher must keep moving after the resume for the comparison to mean anything"
    for name, value in expected_weights.items():
        assert torch.equal(got_weights[name], value), name
