"""Warm start (`trl-sdar sft`): the built-in environments' experts rendered into the agent's own prompts and format,
then supervised fine-tuning with TRL's `SFTTrainer`."""

from trl_sdar.commands.sft.args import WarmStartArguments, parse_sft_args
from trl_sdar.commands.sft.demos import Demonstration, DemoSettings, ExpertGenerator, render_demonstrations
from trl_sdar.commands.sft.run import completion_loss, run_sft, to_dataset

__all__ = ["DemoSettings", "Demonstration", "ExpertGenerator", "WarmStartArguments", "completion_loss",
           "parse_sft_args", "render_demonstrations", "run_sft", "to_dataset"]  # fmt: skip
