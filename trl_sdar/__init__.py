"""trl_sdar: SDAR (Self-Distilled Agentic Reinforcement Learning) as a drop-in extension of TRL's GRPOTrainer."""

from .config import SDARConfig
from .losses import sdar_distillation_loss
from .trainer import SDARTrainer

__all__ = ["SDARConfig", "SDARTrainer", "sdar_distillation_loss"]
__version__ = "0.1.0"
