"""`trl-sdar plot`: the figures of training runs (`figures.py`) and the command (`command.py`)."""
