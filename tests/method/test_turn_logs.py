"""TRL's logs of a turn-row batch leave the padding rows out: length statistics, reward warning, tables, tokens."""

import logging

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_sdar import SDARConfig, SDARTrainer
from trl_sdar.agent.rollout import EnvRollout, RolloutSettings, env_reward
from trl_sdar.method.turns.logged import completion_length_metrics, kept_rows
from trl_sdar.testing import ScriptedEnv


def test_completion_length_metrics_by_hand():
    stats = completion_length_metrics([4, 8, 6], [False, True, False])
    assert stats == {"mean_length": 6.0, "min_length": 4.0, "max_length": 8.0, "clipped_ratio": 1 / 3,
                     "mean_terminated_length": 5.0, "min_terminated_length": 4.0,
                     "max_terminated_length": 6.0}  # fmt: skip
    assert completion_length_metrics([5], [True])["mean_terminated_length"] == 0.0  # TRL's value when none ended


def test_kept_rows_skip_each_process_padding():
    assert kept_rows([2, 3], target=4) == [0, 1, 4, 5, 6]


@pytest.fixture
def trainer(tiny_model_dir, tmp_path):
    # tasks 0 and 1 of the scripted world take 1 and 2 turns: 3 x 1 + 3 x 2 = 9 rows, padded to 12 (a multiple of 6)
    settings = RolloutSettings(rollout_unit="turn", max_turns=3, max_turn_tokens=6, history_window=1)
    rollout = EnvRollout(ScriptedEnv.fixed_length, settings=settings)
    config = SDARConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                        gradient_checkpointing=False, num_generations=3, per_device_train_batch_size=3,
                        gradient_accumulation_steps=2, max_completion_length=6, sdar_coef=0.0, seed=0,
                        log_completions=True)  # fmt: skip
    return SDARTrainer(AutoModelForCausalLM.from_pretrained(tiny_model_dir), env_reward, args=config,
                       train_dataset=rollout.dataset([0, 1]), rollout_func=rollout,
                       processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))  # fmt: skip


def test_logs_of_a_padded_turn_batch_tell_the_real_rows_only(trainer, caplog):
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 2
    with caplog.at_level(logging.WARNING):
        output = trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    metrics = trainer._metrics["train"]
    real = int(output["num_rows_in_batch"])
    assert (real, metrics["turn/padding_rows"][-1]) == (9, 3.0)
    lengths = (output["completion_mask"] * output["tool_mask"]).sum(1)[:real]
    assert metrics["completions/min_length"][-1] == lengths.min().item() >= 1  # was 0: a padding row
    assert metrics["completions/mean_length"][-1] == pytest.approx(lengths.float().mean().item())
    assert "All reward functions returned None" not in caplog.text
    logs = trainer._logs
    assert len(logs["prompt"]) == len(logs["completion"]) == len(logs["advantages"]) == real  # was cut at 6 of 12
    assert None not in logs["prompt"] and None not in logs["rewards"]["env_reward"]
    assert list(logs["advantages"]) == pytest.approx(output["advantages"][:real].tolist())  # the trained ones
    prompt_tokens = output["prompt_mask"][:real].sum() + lengths.sum()
    assert trainer.state.num_input_tokens_seen == prompt_tokens.item()
