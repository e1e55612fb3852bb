"""Recipes under recipes/: every YAML parses with `trl-sdar train`'s parser, carries the paper's values (METHOD.md
§5–6), each baseline differs from its SDAR recipe only in its documented keys (STYLE.md: "baselines differing by one
line"), and every accelerate config named exists and loads with accelerate's own loader.

The GPU recipes keep their GPU values in the file (bf16, vLLM); parsing on this CPU-only machine overrides them on the
command line, and the file values are checked by loading the YAML directly.
"""

import functools
import json
import os
import re
import shlex
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from trl_sdar.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
RECIPE_DIR = ROOT / "recipes"
ACCELERATE_DIR = RECIPE_DIR / "accelerate"
SFT_RECIPES = sorted(RECIPE_DIR.rglob("sft_*.yaml"))  # `trl-sdar sft` recipes, parsed in tests/commands/test_sft.py
COMPARE_DIR = RECIPE_DIR / "compare"  # `trl-sdar compare` specs, checked in tests/commands/test_compare.py
RECIPES = sorted(
    p
    for p in RECIPE_DIR.rglob("*.yaml")
    if ACCELERATE_DIR not in p.parents and COMPARE_DIR not in p.parents and p not in SFT_RECIPES
)
CPU_RECIPE_DIRS = ("quickstart", "study")  # CPU-sized recipes: the quickstart and the CPU studies (docs/results.md)
BENCH_RECIPES = [p for p in RECIPES if p.parent.name not in CPU_RECIPE_DIRS]
CPU_OVERRIDES = ["--bf16", "false", "--use_cpu", "true", "--use_vllm", "false"]

# The paper's models per benchmark (hub id by file-name tag) and per-benchmark settings (METHOD.md §6).
HUB_IDS = {
    "qwen2.5-3b": "Qwen/Qwen2.5-3B-Instruct",
    "qwen2.5-7b": "Qwen/Qwen2.5-7B-Instruct",
    "qwen3-1.7b": "Qwen/Qwen3-1.7B",
}
PAPER_MODELS = {"alfworld": ["qwen2.5-3b", "qwen2.5-7b", "qwen3-1.7b"], "webshop": ["qwen2.5-3b", "qwen2.5-7b"],
                "search_qa": ["qwen2.5-3b"]}  # fmt: skip
LORA_MODELS = ("qwen2.5-3b", "qwen3-1.7b")  # single-GPU LoRA variants exist for the small models
# Layouts past one colocated node (docs/scaling.md): vLLM served on GPUs of its own, on the same or another machine.
SERVER_LAYOUTS = ("server", "multinode_zero3", "multinode_fsdp2")
SERVER_RECIPES = {"alfworld/sdar_qwen2.5-7b_server.yaml", "alfworld/sdar_qwen2.5-7b_multinode_zero3.yaml",
                  "alfworld/sdar_qwen2.5-7b_multinode_fsdp2.yaml"}  # fmt: skip
# The paper's data, skills and teacher context (issue 19): real data, the published skill folder, reference rules.
PAPER_RECIPES = {"alfworld/sdar_qwen2.5-3b_paper.yaml", "webshop/sdar_qwen2.5-7b_paper.yaml",
                 "search_qa/sdar_qwen2.5-3b_paper.yaml"}  # fmt: skip
PAPER_KEYS = {"env_source", "task_order_seed", "skills_path", "skills_rules"}
PAPER_MAY_CHANGE = {"env_data_dir", "env_options", "retriever_url", "questions_path", "num_train_tasks"}
LAYOUTS = ("lora", "paper", *SERVER_LAYOUTS)
MAX_TURNS = {"alfworld": 50, "webshop": 15, "search_qa": 4}
KL_BETA = {"alfworld": 0.01, "webshop": 0.01, "search_qa": 0.001}
TASKS_PER_STEP = {"alfworld": 16, "webshop": 16, "search_qa": 128}  # × 8 episodes each

METHODS = ("skill_grpo", "naive_opsd", "grpo", "sdar")  # prefix order: skill_grpo before grpo
# Method → (sdar_coef, distill_loss_type, student_sees_skills), and the keys its recipe changes vs. the SDAR one.
METHOD_VALUES = {"sdar": (0.01, "sdar", False), "grpo": (0.0, "sdar", False), "skill_grpo": (0.0, "sdar", True),
                 "naive_opsd": (0.01, "naive", False)}  # fmt: skip
BASELINE_KEYS = {"grpo": {"sdar_coef"}, "skill_grpo": {"sdar_coef", "student_sees_skills"},
                 "naive_opsd": {"distill_loss_type"}}  # fmt: skip
LORA_KEYS = {"accelerate_config", "use_peft", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules",
             "learning_rate", "gradient_accumulation_steps"}  # fmt: skip
LORA_MAY_CHANGE = {"per_device_train_batch_size"}  # batch layout on 1 GPU; the episodes per step stay the paper's
RUN_KEYS = {"output_dir", "run_name"}
# A server layout vs. its colocated SDAR recipe: launch, batch layout, environment workers and the vLLM block.
SERVER_KEYS = {"accelerate_config", "gradient_accumulation_steps", "env_workers", "vllm_mode", "vllm_max_model_length",
               "vllm_enable_sleep_mode", "vllm_server_port", "vllm_server_timeout"}  # fmt: skip
SERVER_MAY_CHANGE = {"vllm_server_host"}  # same machine: in the recipe; another machine: on the command line
QUICKSTART = {"model_name_or_path": "builtin:smollm2", "env_name": "alfworld", "env_difficulty": "easy",
              "use_peft": True, "lora_r": 8, "lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
              "use_cpu": True, "bf16": False, "gradient_checkpointing": False, "use_vllm": False,
              "num_generations": 2, "per_device_train_batch_size": 2, "max_turns": 3, "max_turn_tokens": 48,
              "max_completion_length": 48, "rollout_unit": "turn", "history_window": 2, "max_steps": 2,
              "learning_rate": 1e-4, "logging_steps": 1,
              "save_strategy": "no", "report_to": "none", "num_train_tasks": 4, "env_workers": 4}  # fmt: skip

ACCELERATE_EXPECTED = {  # file → (distributed_type, num_processes, mixed_precision, use_cpu)
    "single_gpu": ("NO", 1, "bf16", False),
    "multi_gpu": ("MULTI_GPU", 8, "bf16", False),
    "deepspeed_zero2": ("DEEPSPEED", 8, "bf16", False),
    "deepspeed_zero3": ("DEEPSPEED", 8, "bf16", False),
    "fsdp2": ("FSDP", 8, "bf16", False),
    "cpu_2proc": ("MULTI_GPU", 2, "no", True),  # torchrun + gloo on CPU (MULTI_CPU would need mpirun)
    "deepspeed_zero3_vllm_server": ("DEEPSPEED", 4, "bf16", False),  # GPUs 0-3; vLLM serves on 4-7
    "deepspeed_zero3_multinode": ("DEEPSPEED", 16, "bf16", False),  # 2 machines × 8
    "fsdp2_multinode": ("FSDP", 16, "bf16", False),
}


def _id(path: Path) -> str:
    return str(path.relative_to(RECIPE_DIR))


@functools.cache
def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@functools.cache
def parsed(path: Path):
    from trl_sdar.commands.recipe.launch import parse_train_args

    return parse_train_args(["--config", str(path), *CPU_OVERRIDES])


def name_parts(path: Path) -> tuple[str, str, str, str]:
    """recipes/<bench>/<method>_<model>[_<layout>].yaml → (bench, method, model, layout); layout "" = colocated."""
    layout = next((x for x in LAYOUTS if path.stem.endswith(f"_{x}")), "")
    stem = path.stem.removesuffix(f"_{layout}") if layout else path.stem
    method = next(m for m in METHODS if stem.startswith(m + "_"))
    return path.parent.name, method, stem[len(method) + 1 :], layout


def differing_keys(a: dict, b: dict) -> set[str]:
    """Keys of the symmetric difference of the two mappings' items (values compared as JSON)."""
    items = lambda d: {(k, json.dumps(v, sort_keys=True)) for k, v in d.items()}  # noqa: E731
    return {k for k, _ in items(a) ^ items(b)}


def test_the_expected_recipes_exist():
    expected = {"quickstart/sdar_smollm2_alfworld_cpu.yaml", "quickstart/grpo_smollm2_alfworld_cpu.yaml",
                "study/sdar_scratch_alfworld_cpu.yaml", "study/sdar_smollm2_doors_cpu.yaml"}  # fmt: skip
    for bench, models in PAPER_MODELS.items():
        for model in models:
            expected |= {f"{bench}/{method}_{model}.yaml" for method in METHODS}
            if model in LORA_MODELS:
                expected |= {f"{bench}/sdar_{model}_lora.yaml", f"{bench}/grpo_{model}_lora.yaml"}
    assert {_id(p) for p in RECIPES} == expected | SERVER_RECIPES | PAPER_RECIPES
    assert {p.stem for p in ACCELERATE_DIR.glob("*.yaml")} == set(ACCELERATE_EXPECTED)


@pytest.mark.parametrize("path", RECIPES, ids=_id)
def test_recipe_parses_and_every_value_arrives(path):
    from trl import ModelConfig

    from trl_sdar.commands.recipe.args import SDARScriptArguments
    from trl_sdar.method.config import SDARConfig

    recipe = load(path)
    owners = {f.name: i for i, cls in enumerate((SDARScriptArguments, SDARConfig, ModelConfig)) for f in fields(cls)}
    unknown = set(recipe) - set(owners) - {"accelerate_config"}
    assert not unknown, f"keys that are no recipe field: {unknown}"  # also rules out the reserved top-level `env:`
    script, training, model, launch_args, cli_launch_args = parsed(path)
    assert cli_launch_args == []
    expected_launch = ["--accelerate_config", recipe["accelerate_config"]] if "accelerate_config" in recipe else []
    assert launch_args == expected_launch
    objects = (script, training, model)
    for key, value in recipe.items():
        if key in {"accelerate_config", "report_to", "bf16", "use_cpu", "use_vllm"}:
            continue
        got = getattr(objects[owners[key]], key)
        assert got == value and isinstance(got, type(value)), key  # e.g. not the string '1e-6'
    assert training.report_to == ([] if recipe["report_to"] == "none" else [recipe["report_to"]])
    assert isinstance(recipe["learning_rate"], float), "write 1.0e-6: YAML reads a bare 1e-6 as a string"


HISTORY_WINDOW = {"alfworld": 2, "webshop": 2, "search_qa": 4}
PROMPT_LIMIT = {"alfworld": 2048, "webshop": 4096, "search_qa": 4096}


@pytest.mark.parametrize("path", BENCH_RECIPES, ids=_id)
def test_paper_settings(path):
    bench, method, model, layout = name_parts(path)
    lora, served = layout == "lora", layout in SERVER_LAYOUTS
    r = load(path)
    assert model in PAPER_MODELS[bench]
    assert r["model_name_or_path"] == HUB_IDS[model] and r["env_name"] == bench
    sdar_coef, loss_type, student_sees_skills = METHOD_VALUES[method]
    assert (r["sdar_coef"], r["distill_loss_type"], r["student_sees_skills"]) == (
        sdar_coef,
        loss_type,
        student_sees_skills,
    )
    assert (r["sdar_gate_beta"], r["teacher_model_kind"], r["skills"]) == (5.0, "live", "rules")
    assert r["learning_rate"] == (1.0e-5 if lora else 1.0e-6)
    assert (r["num_generations"], r["beta"], r["entropy_coef"]) == (8, KL_BETA[bench], 0.001)
    assert (r["epsilon"], r["delta"], r["max_grad_norm"], r["loss_type"]) == (0.2, 3.0, 1.0, "dapo")
    assert (r["max_turns"], r["max_turn_tokens"], r["max_steps"], r["temperature"]) == (
        MAX_TURNS[bench],
        512,
        150,
        1.0,
    )
    assert r["bf16"] is True and r["gradient_checkpointing"] is True
    assert r["use_vllm"] is True and r["vllm_mode"] == ("server" if served else "colocate")
    # the paper's loop: one row per turn on a bounded step prompt; vLLM fits the paper's prompt limit + one turn
    assert (r["rollout_unit"], r["history_window"], r["parser"], r["advantage_over"]) == (
        "turn",
        HISTORY_WINDOW[bench],
        "reference",
        "turns",
    )
    max_model_len = server_max_model_len(path) if served else r["vllm_max_model_length"]
    assert r["max_completion_length"] == 512 and max_model_len == PROMPT_LIMIT[bench] + 512
    assert r["max_tokens_per_backward"] >= 8192
    assert r["output_dir"] == f"outputs/{bench}/{path.stem}" and r["logging_steps"] == 1 and r["save_steps"] > 0
    if model.startswith("qwen3"):
        assert r["chat_template_kwargs"] == {"enable_thinking": False}
    if lora:
        assert r["use_peft"] is True and (r["lora_r"], r["lora_alpha"]) == (64, 128)
        assert set(r["lora_target_modules"]) == {f"{m}_proj" for m in ("q", "k", "v", "o", "gate", "up", "down")}
        assert r["accelerate_config"] == "recipes/accelerate/single_gpu.yaml"
    else:
        assert r["use_peft"] is False
        assert r["accelerate_config"] != "recipes/accelerate/single_gpu.yaml"
        if model == "qwen2.5-7b":  # a 7B model's full states (16 bytes/parameter) are sharded
            assert re.search(r"zero3|fsdp", r["accelerate_config"])
    # 16 tasks × 8 episodes per step (Search 128 × 8) = per-device batch × accumulation × processes
    processes = load(ROOT / r["accelerate_config"])["num_processes"]
    episodes = r["per_device_train_batch_size"] * r["gradient_accumulation_steps"] * processes
    assert episodes == TASKS_PER_STEP[bench] * r["num_generations"]


def server_max_model_len(path: Path) -> int:
    """`--max_model_len` of the `trl vllm-serve` command a server recipe's header gives (one value)."""
    values = set(re.findall(r"trl vllm-serve .*?--max_model_len (\d+)", path.read_text().replace("\\\n", " ")))
    assert len(values) == 1, f"{path.name}: the header's vllm-serve commands give --max_model_len {values}"
    return int(values.pop())


def _reference(path: Path) -> Path:
    """The recipe a file is compared against: its SDAR recipe (LoRA SDAR and server layouts: the colocated
    full-fine-tuning SDAR recipe)."""
    if path.parent.name == "quickstart":
        return path.with_name("sdar_smollm2_alfworld_cpu.yaml")
    bench, method, model, layout = name_parts(path)
    if method == "sdar":
        return path.with_name(f"sdar_{model}.yaml")
    return path.with_name(f"sdar_{model}{'_lora' if layout == 'lora' else ''}.yaml")


@pytest.mark.parametrize("path", [p for p in RECIPES if _reference(p) != p], ids=_id)
def test_variant_differs_from_its_sdar_recipe_only_in_documented_keys(path):
    expected, optional = {"sdar_coef"}, set()
    if path.parent.name != "quickstart":
        method, layout = name_parts(path)[1], name_parts(path)[3]
        expected, optional = (LORA_KEYS, LORA_MAY_CHANGE) if method == "sdar" else (BASELINE_KEYS[method], set())
        if layout in SERVER_LAYOUTS:
            expected, optional = SERVER_KEYS, SERVER_MAY_CHANGE
        if layout == "paper":
            expected, optional = PAPER_KEYS, PAPER_MAY_CHANGE
    assert differing_keys(load(path), load(_reference(path))) - optional == expected | RUN_KEYS


def test_output_dirs_and_run_names_are_unique():
    for key in RUN_KEYS:
        values = [load(p)[key] for p in RECIPES]
        assert len(values) == len(set(values)), key


def test_quickstart_recipes_fit_a_small_cpu():
    for method in ("sdar", "grpo"):
        r = load(RECIPE_DIR / "quickstart" / f"{method}_smollm2_alfworld_cpu.yaml")
        expected = {
            **QUICKSTART,
            "output_dir": f"outputs/quickstart/{method}",
            "sdar_coef": 0.01 if method == "sdar" else 0.0,
        }
        assert {k: r.get(k) for k in expected} == expected
        assert "accelerate_config" not in r  # runs in-process; cpu_2proc.yaml is opt-in on the command line


def test_every_named_accelerate_config_exists_and_resolves(monkeypatch):
    from trl_sdar.commands.recipe.launch import resolve_accelerate_config

    monkeypatch.chdir(ROOT)  # recipes name their accelerate config relative to the repository root
    named = {load(p)["accelerate_config"] for p in RECIPES if "accelerate_config" in load(p)}
    assert named
    for value in named:
        assert (ROOT / value).is_file(), value
        assert resolve_accelerate_config(["--accelerate_config", value]) == ["--config_file", value]


@pytest.mark.parametrize("name", sorted(ACCELERATE_EXPECTED))
def test_accelerate_config_loads_with_accelerate(name):
    from accelerate.commands.config.config_args import load_config_from_file

    path = ACCELERATE_DIR / f"{name}.yaml"
    raw = load(path)
    assert {"compute_environment", "distributed_type", "num_processes", "mixed_precision", "use_cpu"} <= set(raw)
    config = load_config_from_file(str(path))  # ClusterConfig(**yaml): an unknown key raises
    distributed_type, processes, precision, use_cpu = ACCELERATE_EXPECTED[name]
    assert (config.distributed_type, config.num_processes) == (distributed_type, processes)
    assert (config.mixed_precision, config.use_cpu) == (precision, use_cpu)
    if distributed_type == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == int(re.search(r"zero(\d)", name).group(1))
    if distributed_type == "FSDP":
        fsdp = config.fsdp_config
        assert (fsdp["fsdp_version"], fsdp["fsdp_auto_wrap_policy"]) == (2, "TRANSFORMER_BASED_WRAP")


# ---- the `accelerate launch` hand-off, stopped where accelerate would start the processes ----

MACHINE_0 = "10.0.0.1"  # stand-in address of training machine 0 in the multi-machine commands
VLLM_HOST = "10.0.0.9"  # stand-in address of the vLLM machine


@pytest.fixture
def launches(monkeypatch):
    """Run `launch_with_accelerate` for real down to the point where it hands accelerate its parsed arguments (the
    project's seam `launch.start_processes`); return the LaunchPlan it printed, checked against what it handed over."""
    from trl_sdar.commands.recipe import launch as launch_module

    handed = []
    monkeypatch.setattr(launch_module, "start_processes", lambda parsed: handed.append(parsed))
    monkeypatch.setenv(launch_module.LAUNCHED_ENV, "0")  # restored afterwards (the hand-off sets it to 1)
    monkeypatch.chdir(ROOT)

    def launch(argv: list[str]):
        *_, launch_args, cli_launch_args = launch_module.parse_train_args(argv)
        plan = launch_module.launch_with_accelerate(argv, launch_args, cli_launch_args)
        assert os.environ[launch_module.LAUNCHED_ENV] == "1"  # the started processes train, not re-launch
        monkeypatch.setenv(launch_module.LAUNCHED_ENV, "0")  # this test process goes on as a launcher
        assert len(handed) == 1, handed
        parsed = handed.pop()
        assert (parsed.module, parsed.training_script) == (True, plan.module)
        assert parsed.training_script_args == plan.script_args
        return plan

    return launch


def check_launch(plan, config_path: str, script_argv: list[str], machine_rank: int = 0) -> None:
    """What accelerate is asked to start matches the config: processes, machines, rank, address, precision, GPUs."""
    config = load(ROOT / config_path)
    assert Path(plan.config_file).resolve() == (ROOT / config_path).resolve()
    assert (plan.module, plan.script_args) == ("trl_sdar.cli", ["train", *script_argv])  # launch-only keys removed
    assert (plan.distributed_type, plan.mixed_precision) == (config["distributed_type"], config["mixed_precision"])
    assert plan.gpu_ids == str(config.get("gpu_ids", "all"))
    assert (plan.num_processes, plan.num_machines) == (config["num_processes"], config["num_machines"])
    if plan.num_machines > 1:
        assert (plan.machine_rank, plan.main_process_ip) == (machine_rank, MACHINE_0)
    assert f"{config['num_processes'] // config['num_machines']} process(es)" in plan.describe()


def _machine_args(config_path: str, machine_rank: int) -> list[str]:
    if load(ROOT / config_path)["num_machines"] == 1:
        return []
    port = ["--main_process_port", str(free_port())] if machine_rank == 0 else []  # rank 0 checks its port is free
    return ["--machine_rank", str(machine_rank), "--main_process_ip", MACHINE_0, *port]


@pytest.mark.parametrize("name", sorted(ACCELERATE_EXPECTED))
def test_every_accelerate_config_launches_its_processes(launches, name):
    config_path = f"recipes/accelerate/{name}.yaml"
    script = ["--config", "recipes/quickstart/sdar_smollm2_alfworld_cpu.yaml"]
    for rank in (0, 1) if load(ROOT / config_path)["num_machines"] > 1 else (0,):
        plan = launches([*script, "--accelerate_config", config_path, *_machine_args(config_path, rank)])
        check_launch(plan, config_path, script, machine_rank=rank)


@pytest.mark.parametrize("path", [p for p in RECIPES if "accelerate_config" in load(p)], ids=_id)
def test_every_recipe_launches_its_accelerate_config(launches, path):
    config_path = load(path)["accelerate_config"]
    script = ["--config", str(path.relative_to(ROOT)), *CPU_OVERRIDES]
    rank = 1 if load(ROOT / config_path)["num_machines"] > 1 else 0
    plan = launches([*script, *_machine_args(config_path, rank)])
    check_launch(plan, config_path, script, machine_rank=rank)


def header_commands(path: Path) -> list[list[str]]:
    """The `trl-sdar train …` commands a file's comments give (continuation lines joined), as argv lists."""
    lines = [line.lstrip("#").strip() for line in path.read_text().splitlines() if line.startswith("#")]
    text = "\n".join(lines).replace("\\\n", " ")
    return [shlex.split(m) for m in re.findall(r"trl-sdar train ([^\n`]*)", text)]


@pytest.mark.parametrize("path", sorted((RECIPE_DIR / p) for p in SERVER_RECIPES), ids=_id)
def test_commands_in_server_recipe_headers_launch(launches, path):
    from trl_sdar.commands.recipe.launch import parse_train_args

    commands = header_commands(path) + header_commands(ROOT / load(path)["accelerate_config"])
    assert commands, "the header gives the launch commands"
    for argv in commands:
        argv = [{"$VLLM_HOST": VLLM_HOST, "$TRAIN0": MACHINE_0}.get(a, a) for a in argv]
        if "--machine_rank" in argv and argv[argv.index("--machine_rank") + 1] == "0":
            argv += ["--main_process_port", str(free_port())]  # the shipped port may be taken on a test machine
        script, training, *_ = parse_train_args([*argv, *CPU_OVERRIDES])
        assert training.vllm_mode == "server"
        config_path = load(ROOT / argv[argv.index("--config") + 1])["accelerate_config"]
        rank = int(argv[argv.index("--machine_rank") + 1]) if "--machine_rank" in argv else 0
        plan = launches([*argv, *CPU_OVERRIDES])
        assert plan.script_args[:3] == ["train", "--config", argv[1]]
        check_launch(plan, config_path, plan.script_args[1:], machine_rank=rank)
        if load(ROOT / config_path)["num_machines"] > 1:
            assert training.vllm_server_host == VLLM_HOST  # another machine: its address is on the command line
        else:
            assert training.vllm_server_host == "127.0.0.1"


def test_accelerate_config_on_the_command_line_overrides_the_recipes(launches):
    recipe = "recipes/alfworld/sdar_qwen2.5-7b.yaml"  # names deepspeed_zero3.yaml
    script = ["--config", recipe, *CPU_OVERRIDES]
    plan = launches([*script, "--accelerate_config", "fsdp2"])  # a name of recipes/accelerate/*.yaml
    check_launch(plan, "recipes/accelerate/fsdp2.yaml", script)
    assert plan.distributed_type == "FSDP"


def test_several_machines_without_the_address_of_machine_0_is_a_clear_error(launches):
    recipe = "recipes/alfworld/sdar_qwen2.5-7b_multinode_zero3.yaml"
    with pytest.raises(ValueError, match="num_machines=2 needs main_process_ip"):
        launches(["--config", recipe, *CPU_OVERRIDES, "--machine_rank", "1"])


def test_batch_arithmetic_is_checked_against_the_processes_accelerate_will_start(launches):
    recipe = "recipes/alfworld/sdar_qwen2.5-7b_multinode_zero3.yaml"
    four_machines = [
        "--num_machines",
        "4",
        "--num_processes",
        "32",
        "--machine_rank",
        "1",
        "--main_process_ip",
        MACHINE_0,
    ]
    # 128 episodes = 2 × 2 × 32: this one process alone would have a generation batch of 2 × 2 = 4 < 8 generations
    argv = ["--config", recipe, *CPU_OVERRIDES, "--gradient_accumulation_steps", "2", *four_machines]
    plan = launches(argv)
    assert (plan.num_machines, plan.num_processes, plan.machine_rank) == (4, 32, 1)
    assert "8 process(es) on machine 1 of 4" in plan.describe()
    with pytest.raises(ValueError, match=r"generation_batch_size \(4\) must be divisible by num_generations \(8\)"):
        launches(["--config", recipe, *CPU_OVERRIDES, "--per_device_train_batch_size", "1",  # 1 × 1 × 4 processes
                  "--gradient_accumulation_steps", "1", "--num_processes", "4", "--num_machines", "1"])  # fmt: skip


def test_a_recipe_trained_in_this_process_keeps_its_own_world_size():
    from trl_sdar.commands.recipe.launch import launch_processes, parse_train_args

    quickstart = "recipes/quickstart/sdar_smollm2_alfworld_cpu.yaml"
    assert launch_processes(["--config", str(ROOT / quickstart)]) is None  # no hand-off: no accelerate config
    training = parse_train_args(["--config", str(ROOT / quickstart)])[1]
    assert training.world_size == 1 and training.generation_batch_size == training.per_device_train_batch_size
    assert launch_processes(["--config", str(ROOT / quickstart), "--num_processes=2"]) == 2


def test_the_multi_machine_recipes_differ_only_in_their_accelerate_config():
    zero3, fsdp2 = (load(RECIPE_DIR / f"alfworld/sdar_qwen2.5-7b_multinode_{k}.yaml") for k in ("zero3", "fsdp2"))
    assert differing_keys(zero3, fsdp2) == {"accelerate_config"} | RUN_KEYS
    configs = [load(ROOT / r["accelerate_config"]) for r in (zero3, fsdp2)]
    assert [(c["num_machines"], c["num_processes"]) for c in configs] == [(2, 16), (2, 16)]
