"""The training arguments of `trl-sdar sft`: TRL's `SFTConfig` with its checkpointing flag under transformers' current
name (no FutureWarning). A module-level class, because the Trainer pickles its arguments into every saved folder."""

from __future__ import annotations

from dataclasses import dataclass

from trl import SFTConfig

from trl_sdar.method.config import adopt_activation_checkpointing


@dataclass
class WarmStartSFTConfig(SFTConfig):
    """`SFTConfig`, with `gradient_checkpointing` moved to `activation_checkpointing` before transformers checks it."""

    def __post_init__(self):
        adopt_activation_checkpointing(self)
        super().__post_init__()
