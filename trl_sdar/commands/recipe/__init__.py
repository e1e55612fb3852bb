"""Recipes: the script fields of a YAML recipe (`args.py`) and the `accelerate launch` hand-off (`launch.py`)."""
