"""Training on turn rows (`rollout_unit="turn"`): GRPO advantages over turn rows and even row counts across
processes (`advantages.py`), the batch built from played episodes (`batch.py`), and token-bounded backward passes
(`passes.py`)."""
