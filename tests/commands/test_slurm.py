"""The SLURM scripts under scripts/slurm/, run by bash with stand-ins for `scontrol`, `srun`, `trl` and `trl-sdar`
that record what would run where; the recorded `trl-sdar train` command lines are then launched down to accelerate's
launchers (as in test_recipes.py), and the `trl vllm-serve` ones parsed with TRL's own parser.
Also: every `trl vllm-serve` command in a recipe or accelerate-config header parses and fits the model.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from test_recipes import (
    ACCELERATE_DIR,
    CPU_OVERRIDES,
    RECIPE_DIR,
    ROOT,
    check_launch,
    launches,  # noqa: F401  (the fixture: launch down to accelerate's launchers, record)
    load,
)

SLURM_DIR = ROOT / "scripts" / "slurm"
NODES = ["gpu-a", "gpu-b", "gpu-c"]
# attention heads, key/value heads: vLLM's tensor parallel size must divide both (or be a multiple of the KV heads)
HEADS = {"Qwen/Qwen2.5-7B-Instruct": (28, 4), "Qwen/Qwen2.5-3B-Instruct": (16, 2), "Qwen/Qwen3-1.7B": (16, 8)}

RECORDER = """#!{python}
import json, os, sys, time
if {program!r} == "trl-sdar":  # like the real trainer, wait for the server (started in the background) to be up
    for _ in range(200):
        if os.path.exists(os.environ["SLURM_RECORD"]) and '"trl"' in open(os.environ["SLURM_RECORD"]).read():
            break
        time.sleep(0.05)
with open(os.environ["SLURM_RECORD"], "a") as f:
    env = os.environ.get
    record = {{"program": {program!r}, "argv": sys.argv[1:], "node": env("SLURMD_NODENAME"),
              "rank": env("SLURM_PROCID"), "gpus": env("CUDA_VISIBLE_DEVICES")}}
    f.write(json.dumps(record) + "\\n")
"""
SRUN = """#!{python}
import os, subprocess, sys
args, options = sys.argv[1:], {{}}
while args[0].startswith("--"):
    key, _, value = args.pop(0)[2:].partition("=")
    options[key] = value
nodes = options["nodelist"].split(",")
assert int(options["nodes"]) == len(nodes), options
for rank, node in enumerate(nodes):
    subprocess.run(args, check=True, env={{**os.environ, "SLURM_PROCID": str(rank), "SLURMD_NODENAME": node}})
"""
SCONTROL = """#!/bin/bash
[ "$1 $2 $3" = "show hostnames $SLURM_JOB_NODELIST" ] && printf '%s\\n' $FAKE_NODES
"""


def _install_fakes(bin_dir: Path) -> None:
    bin_dir.mkdir()
    scripts = {"srun": SRUN.format(python=sys.executable), "scontrol": SCONTROL}
    for program in ("trl", "trl-sdar"):
        scripts[program] = RECORDER.format(python=sys.executable, program=program)
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)


def run_sbatch(tmp_path: Path, script: str, args: list[str], nodes: list[str], **env: str) -> list[dict]:
    _install_fakes(tmp_path / "bin")
    record = tmp_path / "record.jsonl"
    env = {**os.environ, **env, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "SLURM_RECORD": str(record),
           "SLURM_JOB_NODELIST": "gpu-[a-c]", "FAKE_NODES": " ".join(nodes)}  # fmt: skip
    result = subprocess.run(["bash", str(SLURM_DIR / script), *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in record.read_text().splitlines()]


def parse_vllm_serve(argv: list[str]):
    """TRL's own `trl vllm-serve` parser: an unknown or misspelt flag fails here."""
    from trl.scripts.vllm_serve import make_parser

    assert argv[0] == "vllm-serve"
    (args,) = make_parser().parse_args_and_config(argv[1:])
    return args


def check_fits(serve, recipe: dict) -> None:
    heads, kv_heads = HEADS[serve.model]
    tp = serve.tensor_parallel_size
    assert heads % tp == 0 and (kv_heads % tp == 0 or tp % kv_heads == 0), (serve.model, tp)
    assert serve.model == recipe["model_name_or_path"]
    assert serve.max_model_len > recipe["max_completion_length"]  # the prompt + the whole episode fit


def test_multinode_script_serves_on_the_first_machine_and_trains_on_the_others(tmp_path, launches):  # noqa: F811
    records = run_sbatch(tmp_path, "sdar_multinode.sbatch", ["--seed", "3"], NODES)
    servers = [r for r in records if r["program"] == "trl"]
    trainers = [r for r in records if r["program"] == "trl-sdar"]
    assert [s["node"] for s in servers] == NODES[:1] and [t["node"] for t in trainers] == NODES[1:]
    recipe_path = "recipes/alfworld/sdar_qwen2.5-7b_multinode_zero3.yaml"
    serve = parse_vllm_serve(servers[0]["argv"])
    check_fits(serve, load(ROOT / recipe_path))
    assert (serve.host, serve.port, serve.tensor_parallel_size) == ("0.0.0.0", 8000, 4)
    for trainer in trainers:
        argv = trainer["argv"]
        assert argv[:3] == ["train", "--config", recipe_path] and argv[-2:] == ["--seed", "3"]
        machine_rank = int(trainer["rank"])
        assert argv[argv.index("--machine_rank") + 1] == str(machine_rank)
        assert argv[argv.index("--main_process_ip") + 1] == NODES[1]  # machine 0 of the training machines
        plan = launches([*argv[1:], *CPU_OVERRIDES])
        check_launch_multi(plan, recipe_path, machine_rank)
        training = _parsed_training(argv[1:])
        assert (training.vllm_server_host, training.vllm_server_port) == (NODES[0], serve.port)


def check_launch_multi(plan, recipe_path: str, machine_rank: int) -> None:
    assert (plan.num_machines, plan.machine_rank, plan.num_processes) == (2, machine_rank, 16)
    assert (plan.main_process_ip, plan.main_process_port) == (NODES[1], 29500)
    assert plan.distributed_type == "DEEPSPEED"
    assert plan.script_args[:3] == ["train", "--config", recipe_path]


def _parsed_training(argv: list[str]):
    from trl_sdar.commands.recipe.launch import parse_train_args

    return parse_train_args([*argv, *CPU_OVERRIDES])[1]


def test_multinode_script_scales_to_more_training_machines(tmp_path, launches):  # noqa: F811
    nodes = [*NODES, "gpu-d"]
    records = run_sbatch(tmp_path, "sdar_multinode.sbatch", ["--gradient_accumulation_steps", "2"], nodes,
                         RECIPE="recipes/alfworld/sdar_qwen2.5-7b_multinode_fsdp2.yaml")  # fmt: skip
    trainers = [r for r in records if r["program"] == "trl-sdar"]
    assert [(t["node"], t["rank"]) for t in trainers] == [("gpu-b", "0"), ("gpu-c", "1"), ("gpu-d", "2")]
    plan = launches([*trainers[2]["argv"][1:], *CPU_OVERRIDES])
    assert (plan.num_machines, plan.machine_rank, plan.num_processes) == (3, 2, 24)
    assert plan.distributed_type == "FSDP"
    assert _parsed_training(trainers[2]["argv"][1:]).gradient_accumulation_steps == 2  # the script's arguments


def test_multinode_script_needs_a_training_machine(tmp_path):
    _install_fakes(tmp_path / "bin")
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "SLURM_RECORD": str(tmp_path / "r"),
           "SLURM_JOB_NODELIST": "gpu-a", "FAKE_NODES": "gpu-a"}  # fmt: skip
    result = subprocess.run(["bash", str(SLURM_DIR / "sdar_multinode.sbatch")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1 and "needs 1 vLLM machine + at least 1 training machine" in result.stderr


def test_single_node_script_splits_the_gpus_between_server_and_trainer(tmp_path, launches):  # noqa: F811
    records = run_sbatch(tmp_path, "sdar_single_node_server.sbatch", [], NODES[:1])
    (server,) = [r for r in records if r["program"] == "trl"]
    (trainer,) = [r for r in records if r["program"] == "trl-sdar"]
    recipe_path = "recipes/alfworld/sdar_qwen2.5-7b_server.yaml"
    serve = parse_vllm_serve(server["argv"])
    check_fits(serve, load(ROOT / recipe_path))
    assert len(server["gpus"].split(",")) == serve.tensor_parallel_size
    plan = launches([*trainer["argv"][1:], *CPU_OVERRIDES])
    config_path = load(ROOT / recipe_path)["accelerate_config"]
    check_launch(plan, config_path, plan.script_args[1:])
    trainer_gpus = set(plan.gpu_ids.split(","))
    assert trainer_gpus.isdisjoint(server["gpus"].split(","))  # generation on GPUs of its own
    assert len(trainer_gpus) + len(server["gpus"].split(",")) == 8
    training = _parsed_training(trainer["argv"][1:])
    assert (training.vllm_server_host, training.vllm_server_port) == (serve.host, serve.port)


def _header_serve_commands(path: Path) -> list[list[str]]:
    lines = [line.lstrip("#").strip() for line in path.read_text().splitlines() if line.startswith("#")]
    text = "\n".join(lines).replace("\\\n", " ")
    return [shlex.split(m) for m in re.findall(r"trl (vllm-serve [^\n`&]*)", text)]


SERVED = sorted(
    p for p in RECIPE_DIR.rglob("*.yaml") if ACCELERATE_DIR not in p.parents and "vllm-serve" in p.read_text()
)


@pytest.mark.parametrize("path", SERVED, ids=lambda p: p.name)
def test_every_vllm_serve_command_in_a_header_parses_and_fits_the_recipe(path):
    recipe = load(path)
    assert recipe["vllm_mode"] == "server"
    commands = _header_serve_commands(path) + _header_serve_commands(ROOT / recipe["accelerate_config"])
    assert commands
    for argv in commands:
        serve = parse_vllm_serve(argv)
        check_fits(serve, recipe)
        assert serve.port == recipe["vllm_server_port"]


def _doc_commands(program: str) -> list[list[str]]:
    """`program …` command lines in the fenced bash blocks of docs/scaling.md (continuations joined, comments cut)."""
    text = (ROOT / "docs" / "scaling.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.DOTALL)
    commands = []
    for line in (line.split("#")[0] for b in blocks for line in b.replace("\\\n", " ").splitlines()):
        words = [w for w in shlex.split(line) if w != "&"]
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # environment assignments before the command
            words.pop(0)
        if words[: len(program.split())] == program.split():
            commands.append(words[len(program.split()) :])
    return commands


def test_commands_in_the_scaling_guide_parse_and_launch(launches):  # noqa: F811
    from trl_sdar.commands.recipe.launch import parse_train_args

    serves = [parse_vllm_serve(["vllm-serve", *argv]) for argv in _doc_commands("trl vllm-serve")]
    trains = _doc_commands("trl-sdar train")
    assert len(serves) >= 2 and len(trains) >= 2
    for argv in trains:
        argv = [{"$VLLM_HOST": NODES[0], "$TRAIN0": NODES[1], "R": "1"}.get(a, a) for a in argv]
        recipe = load(ROOT / argv[argv.index("--config") + 1])
        training = parse_train_args([*argv, *CPU_OVERRIDES])[1]
        assert training.vllm_mode == "server" and any(s.port == training.vllm_server_port for s in serves)
        assert any(s.model == recipe["model_name_or_path"] for s in serves)
        plan = launches([*argv, *CPU_OVERRIDES])
        assert plan.num_processes == load(ROOT / recipe["accelerate_config"])["num_processes"]
