"""Recipes under recipes/: every YAML parses with `trl-sdar train`'s parser, carries the paper's values (METHOD.md
§5–6), each baseline differs from its SDAR recipe only in its documented keys (STYLE.md: "baselines differing by one
line"), and every accelerate config named exists and loads with accelerate's own loader.

The GPU recipes keep their GPU values in the file (bf16, vLLM); parsing on this CPU-only machine overrides them on the
command line, and the file values are checked by loading the YAML directly.
"""

import functools
import json
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPE_DIR = ROOT / "recipes"
ACCELERATE_DIR = RECIPE_DIR / "accelerate"
RECIPES = sorted(p for p in RECIPE_DIR.rglob("*.yaml") if ACCELERATE_DIR not in p.parents)
BENCH_RECIPES = [p for p in RECIPES if p.parent.name != "quickstart"]
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
QUICKSTART = {"model_name_or_path": "builtin:smollm2", "env_name": "alfworld", "env_difficulty": "easy",
              "use_peft": True, "lora_r": 8, "lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
              "use_cpu": True, "bf16": False, "gradient_checkpointing": False, "use_vllm": False,
              "num_generations": 2, "per_device_train_batch_size": 2, "max_turns": 3, "max_turn_tokens": 32,
              "max_completion_length": 384, "max_steps": 2, "learning_rate": 1e-4, "logging_steps": 1,
              "save_strategy": "no", "report_to": "none", "num_train_tasks": 4, "env_workers": 4}  # fmt: skip

ACCELERATE_EXPECTED = {  # file → (distributed_type, num_processes, mixed_precision, use_cpu)
    "single_gpu": ("NO", 1, "bf16", False),
    "multi_gpu": ("MULTI_GPU", 8, "bf16", False),
    "deepspeed_zero2": ("DEEPSPEED", 8, "bf16", False),
    "deepspeed_zero3": ("DEEPSPEED", 8, "bf16", False),
    "fsdp2": ("FSDP", 8, "bf16", False),
    "cpu_2proc": ("MULTI_GPU", 2, "no", True),  # torchrun + gloo on CPU (MULTI_CPU would need mpirun)
}


def _id(path: Path) -> str:
    return str(path.relative_to(RECIPE_DIR))


@functools.cache
def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@functools.cache
def parsed(path: Path):
    from trl_sdar.launch import parse_train_args

    return parse_train_args(["--config", str(path), *CPU_OVERRIDES])


def name_parts(path: Path) -> tuple[str, str, str, bool]:
    """recipes/<bench>/<method>_<model>[_lora].yaml → (bench, method, model, lora)."""
    stem, lora = path.stem.removesuffix("_lora"), path.stem.endswith("_lora")
    method = next(m for m in METHODS if stem.startswith(m + "_"))
    return path.parent.name, method, stem[len(method) + 1 :], lora


def differing_keys(a: dict, b: dict) -> set[str]:
    """Keys of the symmetric difference of the two mappings' items (values compared as JSON)."""
    items = lambda d: {(k, json.dumps(v, sort_keys=True)) for k, v in d.items()}  # noqa: E731
    return {k for k, _ in items(a) ^ items(b)}


def test_the_expected_recipes_exist():
    expected = {"quickstart/sdar_smollm2_alfworld_cpu.yaml", "quickstart/grpo_smollm2_alfworld_cpu.yaml"}
    for bench, models in PAPER_MODELS.items():
        for model in models:
            expected |= {f"{bench}/{method}_{model}.yaml" for method in METHODS}
            if model in LORA_MODELS:
                expected |= {f"{bench}/sdar_{model}_lora.yaml", f"{bench}/grpo_{model}_lora.yaml"}
    assert {_id(p) for p in RECIPES} == expected
    assert {p.stem for p in ACCELERATE_DIR.glob("*.yaml")} == set(ACCELERATE_EXPECTED)


@pytest.mark.parametrize("path", RECIPES, ids=_id)
def test_recipe_parses_and_every_value_arrives(path):
    from trl import ModelConfig

    from trl_sdar.config import SDARConfig
    from trl_sdar.script_args import SDARScriptArguments

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
    bench, method, model, lora = name_parts(path)
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
    assert r["use_vllm"] is True and r["vllm_mode"] == "colocate"
    # the paper's loop: one row per turn on a bounded step prompt; vLLM fits the paper's prompt limit + one turn
    assert (r["rollout_unit"], r["history_window"], r["parser"], r["advantage_over"]) == (
        "turn",
        HISTORY_WINDOW[bench],
        "reference",
        "turns",
    )
    assert r["max_completion_length"] == 512 and r["vllm_max_model_length"] == PROMPT_LIMIT[bench] + 512
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
        if model == "qwen2.5-7b":
            assert "zero" in r["accelerate_config"]
    # 16 tasks × 8 episodes per step (Search 128 × 8) = per-device batch × accumulation × processes
    processes = load(ROOT / r["accelerate_config"])["num_processes"]
    episodes = r["per_device_train_batch_size"] * r["gradient_accumulation_steps"] * processes
    assert episodes == TASKS_PER_STEP[bench] * r["num_generations"]


def _reference(path: Path) -> Path:
    """The recipe a file is compared against: its SDAR recipe (LoRA SDAR: the full-fine-tuning SDAR recipe)."""
    if path.parent.name == "quickstart":
        return path.with_name("sdar_smollm2_alfworld_cpu.yaml")
    bench, method, model, lora = name_parts(path)
    if method == "sdar":
        return path.with_name(f"sdar_{model}.yaml")
    return path.with_name(f"sdar_{model}{'_lora' if lora else ''}.yaml")


@pytest.mark.parametrize("path", [p for p in RECIPES if _reference(p) != p], ids=_id)
def test_variant_differs_from_its_sdar_recipe_only_in_documented_keys(path):
    expected, optional = {"sdar_coef"}, set()
    if path.parent.name != "quickstart":
        method = name_parts(path)[1]
        expected, optional = (LORA_KEYS, LORA_MAY_CHANGE) if method == "sdar" else (BASELINE_KEYS[method], set())
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
    from trl_sdar.launch import resolve_accelerate_config

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
        assert config.deepspeed_config["zero_stage"] == int(name[-1])
    if distributed_type == "FSDP":
        fsdp = config.fsdp_config
        assert (fsdp["fsdp_version"], fsdp["fsdp_auto_wrap_policy"]) == (2, "TRANSFORMER_BASED_WRAP")
