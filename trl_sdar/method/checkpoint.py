"""Training state that a checkpoint needs for an exact resume, beyond what `Trainer` saves (model, optimizer,
scheduler, RNG, trainer state): the EMA teacher's weights (`Teacher.save` / `Teacher.load`) and TRL's buffered
rollouts.

GRPO generates once per `steps_per_generation × num_iterations` micro-steps and serves the later micro-steps from a
buffer. A checkpoint taken inside that window used to lose the buffer: the resumed run generated new rollouts where
the uninterrupted run reused the buffered ones. Each process saves its own buffer and its micro-step counter.
"""

from __future__ import annotations

import logging
import os

import torch

logger = logging.getLogger(__name__)


def _buffer_path(checkpoint_dir: str, process_index: int) -> str:
    return os.path.join(checkpoint_dir, f"rollout_buffer_{process_index}.pt")


def save_training_state(trainer, output_dir: str) -> None:
    """Write the EMA teacher (collective) and, when the checkpoint falls inside a generation window, this process's
    rollout buffer."""
    if trainer.teacher is not None:
        trainer.teacher.save(output_dir, is_main_process=trainer.args.should_save)
    generate_every = trainer.args.steps_per_generation * trainer.num_iterations
    if trainer._buffered_inputs is not None and trainer._step % generate_every != 0:
        os.makedirs(output_dir, exist_ok=True)
        state = {"step": trainer._step, "buffered_inputs": _to_cpu(trainer._buffered_inputs)}
        torch.save(state, _buffer_path(output_dir, trainer.accelerator.process_index))


def load_training_state(trainer, checkpoint: str) -> None:
    """Restore what `save_training_state` wrote (nothing is changed for what a checkpoint does not hold)."""
    if trainer.teacher is not None and not trainer.teacher.load(checkpoint):
        if trainer.teacher.copy is not None and trainer.args.teacher_model_kind == "ema":
            # (an EMA adapter comes back with the checkpoint's adapter folders)
            logger.warning(f"{checkpoint} has no EMA teacher weights: the EMA teacher restarts from the policy.")
            trainer.teacher.restart_from_policy()
    path = _buffer_path(checkpoint, trainer.accelerator.process_index)
    if os.path.isfile(path):
        try:
            state = torch.load(path, map_location=trainer.accelerator.device, weights_only=True)
        except Exception as error:  # e.g. a rollout_func extra of a type the safe unpickler refuses
            logger.warning(f"{path} could not be read ({error}); the resumed run generates new rollouts there.")
            return
        trainer._step, trainer._buffered_inputs = state["step"], state["buffered_inputs"]


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value
