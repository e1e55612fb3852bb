"""`trl-sdar eval`: options (`args.py`), the command (`run.py`), and the episode loops it runs (`policy.py`)."""

from trl_sdar.commands.evaluate.args import HELP, add_arguments, parse_eval_args
from trl_sdar.commands.evaluate.run import run_eval

__all__ = ["HELP", "add_arguments", "parse_eval_args", "run_eval"]
