"""Recipe parsing for `trl-sdar train` and the `accelerate launch` hand-off, the way `trl grpo` does it.

Keys of the recipe (YAML via `--config`, or `--key value` on the command line) belong to `SDARScriptArguments`,
`SDARConfig` or TRL's `ModelConfig`; anything else must be an `accelerate launch` option (`num_processes`,
`config_file`, `accelerate_config`, …), which makes the command re-launch itself through accelerate. Any other key is
an error naming the key and the closest valid ones.
"""

from __future__ import annotations

import difflib
import os
from contextlib import contextmanager
from dataclasses import dataclass, fields

LAUNCHED_ENV = "TRL_SDAR_LAUNCHED"  # set in processes started by our accelerate hand-off


def make_parser():
    from trl import ModelConfig, TrlParser

    from trl_sdar.commands.recipe.args import SDARScriptArguments
    from trl_sdar.method.config import SDARConfig

    class RecipeParser(TrlParser):
        """A bad value (`--seed 1.5`) becomes a ValueError that `trl-sdar train` prints as one line, not argparse's
        200-line usage block; `--help` lists `--config` and the command's own options first."""

        def error(self, message: str):
            raise ValueError(message)

        def format_help(self) -> str:
            from trl_sdar.commands.recipe.help import format_recipe_help, own_fields, own_first

            sections = [
                ("trl-sdar train: environment, agent loop, skills", own_first(SDARScriptArguments)),
                ("SDAR (SDARConfig's own fields; every GRPOConfig field is further down)", own_fields(SDARConfig)),
                ("the model (TRL's ModelConfig)", [f.name for f in fields(ModelConfig)]),
            ]
            epilog = (
                "Keys that are `accelerate launch` options (num_processes, multi_gpu, config_file, or "
                "accelerate_config: a file or a name in recipes/accelerate/) re-launch the command under accelerate."
            )
            return format_recipe_help(self, sections, epilog)

    description = "Train with SDAR (or a baseline) from a YAML recipe and command-line overrides."
    return RecipeParser((SDARScriptArguments, SDARConfig, ModelConfig), prog="trl-sdar train", description=description)


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
    """(script_args, sdar_config, model_config, launch_args, cli_launch_args) from `train` arguments.

    Before a hand-off to accelerate, the batch arithmetic is checked against the processes accelerate will start
    (GRPO's generation batch = per-device batch × processes × steps per generation), not against this one process.
    """
    check_recipe_file(argv)
    parser = make_parser()
    with _world_size(launch_processes(argv)):
        script, training, model, config_rest, cli_rest = parser.parse_args_and_config(
            argv, return_remaining_strings=True, separate_remaining_strings=True
        )
    check_launch_args(config_rest + cli_rest)
    return script, training, model, config_rest + cli_rest, cli_rest


def launch_processes(argv: list[str]) -> int | None:
    """Processes the accelerate hand-off will start: `num_processes` of the command line, the recipe or the
    accelerate config (in that order); None when this process trains itself (no hand-off, or already launched)."""
    if os.environ.get(LAUNCHED_ENV) == "1":
        return None
    recipe = _read_mapping(_last_flag(argv, "config"))

    def value(key: str) -> str | None:
        given = _last_flag(argv, key)
        return given if given is not None else recipe.get(key)

    processes, config = value("num_processes"), value("accelerate_config")
    config = value("config_file") if config is None else resolve_accelerate_config(["--accelerate_config", config])[1]
    if processes is None and config is not None:
        from accelerate.commands.config.config_args import load_config_from_file

        processes = load_config_from_file(config).num_processes
    return None if processes is None else int(processes)


def _last_flag(argv: list[str], key: str) -> str | None:
    """The value of the last `--key VALUE` or `--key=VALUE` in `argv`."""
    found = None
    for item, following in zip(argv, [*argv[1:], None], strict=True):
        if item == f"--{key}":
            found = following
        elif item.startswith(f"--{key}="):
            found = item.split("=", 1)[1]
    return found


def _read_mapping(path: str | None) -> dict:
    """The recipe's keys, or {} when there is none or it does not load (the recipe parser then says why)."""
    import yaml

    try:
        with open(path) as f:
            loaded = yaml.safe_load(f)
    except (TypeError, OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def check_recipe_file(argv: list[str]) -> None:
    """The `--config` recipe exists and is a YAML mapping; else one line that names the file and the YAML error
    (TrlParser would end in PyYAML's 50-line traceback)."""
    import yaml

    path = _last_flag(argv, "config")
    if path is None:
        return
    if not os.path.isfile(path):
        raise ValueError(f"--config {path!r} does not exist; expected a YAML recipe file.")
    try:
        with open(path) as f:
            loaded = yaml.safe_load(f)
    except yaml.YAMLError as error:
        raise ValueError(f"--config {path} is not valid YAML ({' '.join(str(error).split())}).") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"--config {path} must be a YAML mapping of keys to values, got {type(loaded).__name__}.")


@contextmanager
def _world_size(processes: int | None):
    """`SDARConfig.world_size` reads `processes` while the recipe is parsed (its checks see the launched run)."""
    from trl_sdar.method.config import SDARConfig

    if processes is None:
        yield
        return
    own = SDARConfig.__dict__.get("world_size")
    SDARConfig.world_size = property(lambda self: processes)
    try:
        yield
    finally:
        if own is None:
            del SDARConfig.world_size
        else:
            SDARConfig.world_size = own


def resolve_accelerate_config(launch_args: list[str]) -> list[str]:
    """`--accelerate_config NAME_OR_PATH` → `--config_file PATH` (names: our recipes/accelerate/*.yaml).

    The recipe's value comes first and a command-line one after it: the last one wins, like any other key.
    """
    if "--accelerate_config" not in launch_args:
        return launch_args
    rest, values = [], []
    items = iter(launch_args)
    for item in items:
        if item == "--accelerate_config":
            values.append(next(items, None))
        else:
            rest.append(item)
    value = values[-1]
    if value is None:
        raise ValueError("accelerate_config needs a value: a file or the name of one in recipes/accelerate/.")
    path = value if os.path.exists(value) else os.path.join("recipes", "accelerate", f"{value}.yaml")
    if not os.path.exists(path):
        raise ValueError(f"accelerate_config={value!r}: neither a file nor recipes/accelerate/{value}.yaml.")
    return ["--config_file", path, *rest]


@dataclass(frozen=True)
class LaunchPlan:
    """What the accelerate hand-off will start, read from the launch arguments and the accelerate config file
    (a command-line value wins over the file's, as in `accelerate launch`)."""

    config_file: str | None
    distributed_type: str  # the config's distributed_type ("NO" without a config)
    mixed_precision: str
    num_processes: int  # over all machines
    num_machines: int
    machine_rank: int
    main_process_ip: str | None
    main_process_port: int | None
    gpu_ids: str  # "all" or a comma-separated list
    module: str  # what every process runs: `python -m MODULE SCRIPT_ARGS...`
    script_args: list[str]

    def describe(self) -> str:
        per_machine = self.num_processes // max(self.num_machines, 1)
        where = f" on machine {self.machine_rank} of {self.num_machines}" if self.num_machines > 1 else ""
        gpus = "" if self.gpu_ids == "all" else f", GPUs {self.gpu_ids}"
        source = self.config_file or "accelerate's defaults"
        return (
            f"[trl-sdar] accelerate launch: {per_machine} process(es){where}, {self.distributed_type}, "
            f"mixed precision {self.mixed_precision}{gpus} ({source})"
        )


def plan_launch(train_argv: list[str], launch_args: list[str], cli_launch_args: list[str]):
    """(accelerate's parsed launch arguments, LaunchPlan) for re-running `trl_sdar.cli train …` under accelerate
    (launch-only keys stripped from the command line that the processes get)."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    script_argv = _without(train_argv, cli_launch_args)
    launch_args = resolve_accelerate_config(launch_args)
    parsed = launch_command_parser().parse_args([*launch_args, "--module", "trl_sdar.cli", "train", *script_argv])
    config = load_config_from_file(parsed.config_file) if parsed.config_file else None

    def value(name: str, default):
        given = getattr(parsed, name, None)
        if given is not None:
            return given
        from_file = getattr(config, name, None) if config is not None else None
        return default if from_file is None else from_file

    flags = {"use_deepspeed": "DEEPSPEED", "use_fsdp": "FSDP", "multi_gpu": "MULTI_GPU"}
    distributed = next((kind for flag, kind in flags.items() if getattr(parsed, flag, False)), None)
    if distributed is None:
        distributed = getattr(config, "distributed_type", "NO") if config is not None else "NO"
    plan = LaunchPlan(
        config_file=parsed.config_file,
        distributed_type=str(getattr(distributed, "value", distributed)),
        mixed_precision=str(value("mixed_precision", "no")),
        num_processes=int(value("num_processes", 1)),
        num_machines=int(value("num_machines", 1)),
        machine_rank=int(value("machine_rank", 0)),
        main_process_ip=value("main_process_ip", None),
        main_process_port=value("main_process_port", None),
        gpu_ids=str(value("gpu_ids", "all")),
        module=parsed.training_script,
        script_args=list(parsed.training_script_args),
    )
    check_machines(plan)
    return parsed, plan


def start_processes(parsed) -> None:
    """Hand the parsed launch arguments to accelerate (`accelerate launch`'s own entry point)."""
    from accelerate.commands.launch import launch_command

    launch_command(parsed)


def launch_with_accelerate(train_argv: list[str], launch_args: list[str], cli_launch_args: list[str]) -> LaunchPlan:
    """Re-run `trl_sdar.cli train …` under `accelerate launch`; print and return what was started."""
    parsed, plan = plan_launch(train_argv, launch_args, cli_launch_args)
    print(plan.describe(), flush=True)
    os.environ[LAUNCHED_ENV] = "1"
    start_processes(parsed)
    return plan


def check_machines(plan: LaunchPlan) -> None:
    """Several machines need the address of machine 0 (accelerate would otherwise wait for `None:PORT`)."""
    if plan.num_machines > 1 and not plan.main_process_ip:
        raise ValueError(
            f"num_machines={plan.num_machines} needs main_process_ip, the address of machine 0 (every machine gives "
            "the same one): add `--main_process_ip ADDRESS --machine_rank R` to the command line of machine R."
        )


def _without(argv: list[str], remove: list[str]) -> list[str]:
    remove = list(remove)
    out = []
    for item in argv:
        if remove and item == remove[0]:
            remove.pop(0)
        else:
            out.append(item)
    return out
