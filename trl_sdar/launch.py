"""Recipe parsing for `trl-sdar train` and the `accelerate launch` hand-off, the way `trl grpo` does it.

Keys of the recipe (YAML via `--config`, or `--key value` on the command line) belong to `SDARScriptArguments`,
`SDARConfig` or TRL's `ModelConfig`; anything else must be an `accelerate launch` option (`num_processes`,
`config_file`, `accelerate_config`, …), which makes the command re-launch itself through accelerate. Any other key is
an error naming the key and the closest valid ones.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import fields

LAUNCHED_ENV = "TRL_SDAR_LAUNCHED"  # set in processes started by our accelerate hand-off


def make_parser():
    from trl import ModelConfig, TrlParser

    from .config import SDARConfig
    from .script_args import SDARScriptArguments

    class RecipeParser(TrlParser):
        """A bad value (`--seed 1.5`) becomes a ValueError that `trl-sdar train` prints as one line, not argparse's
        200-line usage block."""

        def error(self, message: str):
            raise ValueError(message)

    return RecipeParser((SDARScriptArguments, SDARConfig, ModelConfig), prog="trl-sdar train")


def _accelerate_options() -> set[str]:
    from accelerate.commands.launch import launch_command_parser

    options = {o for action in launch_command_parser()._actions for o in action.option_strings if o.startswith("--")}
    return options | {"--accelerate_config"}


def _keys(strings: list[str]) -> list[str]:
    return [s.split("=", 1)[0] for s in strings if s.startswith("--")]


def check_launch_args(remaining: list[str]) -> None:
    """Check that every leftover key is an accelerate option; raise with suggestions otherwise."""
    accelerate = _accelerate_options()
    unknown = [k for k in _keys(remaining) if k not in accelerate]
    if unknown:
        valid = [f.name for cls in make_parser().dataclass_types for f in fields(cls)]
        valid += [o[2:] for o in accelerate if "_" in o or "-" not in o]
        key = unknown[0][2:]
        close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else " See `trl-sdar train --help` for valid keys."
        raise ValueError(f"Unknown recipe key {key!r}.{hint}")


def parse_train_args(argv: list[str]):
    """(script_args, sdar_config, model_config, launch_args, cli_launch_args) from `train` arguments."""
    parser = make_parser()
    script, training, model, config_rest, cli_rest = parser.parse_args_and_config(
        argv, return_remaining_strings=True, separate_remaining_strings=True
    )
    check_launch_args(config_rest + cli_rest)
    return script, training, model, config_rest + cli_rest, cli_rest


def resolve_accelerate_config(launch_args: list[str]) -> list[str]:
    """`--accelerate_config NAME_OR_PATH` → `--config_file PATH` (names: our recipes/accelerate/*.yaml)."""
    if "--accelerate_config" not in launch_args:
        return launch_args
    i = launch_args.index("--accelerate_config")
    value = launch_args[i + 1]
    path = value if os.path.exists(value) else os.path.join("recipes", "accelerate", f"{value}.yaml")
    if not os.path.exists(path):
        raise ValueError(f"accelerate_config={value!r}: neither a file nor recipes/accelerate/{value}.yaml.")
    return [*launch_args[:i], "--config_file", path, *launch_args[i + 2 :]]


def launch_with_accelerate(train_argv: list[str], launch_args: list[str], cli_launch_args: list[str]) -> None:
    """Re-run `trl_sdar.cli train …` under `accelerate launch` (launch-only keys stripped from the CLI part)."""
    from accelerate.commands.launch import launch_command, launch_command_parser

    script_argv = _without(train_argv, cli_launch_args)
    os.environ[LAUNCHED_ENV] = "1"
    launch_args = resolve_accelerate_config(launch_args)
    parsed = launch_command_parser().parse_args([*launch_args, "--module", "trl_sdar.cli", "train", *script_argv])
    launch_command(parsed)


def _without(argv: list[str], remove: list[str]) -> list[str]:
    remove = list(remove)
    out = []
    for item in argv:
        if remove and item == remove[0]:
            remove.pop(0)
        else:
            out.append(item)
    return out
