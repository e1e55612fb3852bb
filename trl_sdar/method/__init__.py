"""The method: `SDARConfig`, the pure losses, the teacher (weights, prompts, sharded copies, prefix-shared scoring),
the turn-row batch machinery (`turns/`), and `SDARTrainer`, which holds only the seams into TRL's `GRPOTrainer`.
Nothing here imports the agent loop or the commands."""
