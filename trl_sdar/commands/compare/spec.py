"""The comparison spec: a YAML naming a base `trl-sdar train` recipe, methods as overrides of it, seeds, the starting
model, the evaluation, and an output folder. Loading it checks every field and turns it into a plan of runs.

Every error is one line naming the field, the value and what would be valid (unknown keys get the closest valid
ones, like `trl-sdar train`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

# Recipe keys that the comparison sets itself for every run.
SET_BY_COMPARE = ("output_dir", "run_name", "seed", "model_name_or_path", "resume_from_checkpoint")
# Recipe keys the evaluation reads: every method must share them (set them in `overrides`, not in one method).
SHARED_WITH_EVAL = (
    "env_name",
    "env_source",
    "env_data_dir",
    "env_difficulty",
    "rollout_unit",
    "history_window",
    "parser",
    "max_turns",
    "max_turn_tokens",
    "max_completion_length",
    "task_types",
)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class CompareSpecError(ValueError):
    """A comparison spec that cannot work; the message names the field, the value and what is valid."""


@dataclass(frozen=True)
class EvalSpec:
    """How every model is evaluated: the pinned tasks, the sampling seeds, and the agent-loop settings (default:
    the base recipe's, so a model is evaluated with the loop it was trained in)."""

    manifest: str
    num_tasks: int | None = None  # the first N task ids of the manifest (None: all of them)
    seeds: tuple[int, ...] = (0,)
    temperature: float = 0.4
    batch_size: int = 16
    max_turns: int | None = None
    max_turn_tokens: int | None = None
    rollout_unit: str | None = None
    history_window: int | None = None
    parser: str | None = None
    task_types: tuple[str, ...] | None = None  # None: the base recipe's `task_types` (trained on, evaluated on)


@dataclass(frozen=True)
class CompareSpec:
    name: str
    base_recipe: Path
    model_name_or_path: str | None  # None: the base recipe's
    output_dir: Path
    methods: dict[str, dict[str, Any]]
    seeds: tuple[int, ...]
    eval: EvalSpec
    overrides: dict[str, Any] = field(default_factory=dict)
    time_reference: str | None = None  # the method the time ratios divide by (default: grpo, else the first)


@dataclass(frozen=True)
class RunPlan:
    """One (method, seed) training run: its full recipe and its folder."""

    method: str
    seed: int
    recipe: dict[str, Any]
    run_dir: Path


def _fail(message: str) -> None:
    raise CompareSpecError(message)


def _check_keys(where: str, given: dict, valid: list[str]) -> None:
    for key in given:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=3, cutoff=0.6)
            hint = f" Did you mean: {', '.join(close)}?" if close else f" Valid keys: {', '.join(valid)}."
            _fail(f"Unknown {where} key {key!r}.{hint}")


def _seed_tuple(name: str, value: Any) -> tuple[int, ...]:
    ok = isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value)
    if not ok:
        _fail(f"{name}={value!r} is not valid; expected a non-empty list of integers, e.g. [0, 1, 2].")
    if len(set(value)) != len(value):
        _fail(f"{name}={value!r} repeats a seed; expected distinct integers.")
    return tuple(value)


def _mapping(name: str, value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        _fail(f"{name}={value!r} is not valid; expected a mapping of recipe keys to values.")
    return value


def recipe_field_defaults() -> dict[str, Any]:
    """Every recipe key of `trl-sdar train` (script, SDARConfig, ModelConfig) with its default."""
    from dataclasses import MISSING

    from trl_sdar.commands.recipe.launch import make_parser

    defaults = {}
    for cls in make_parser().dataclass_types:
        for f in fields(cls):
            if f.default is not MISSING:
                defaults.setdefault(f.name, f.default)
            elif f.default_factory is not MISSING:
                defaults.setdefault(f.name, f.default_factory())
            else:
                defaults.setdefault(f.name, None)
    return defaults


def check_recipe_keys(where: str, overrides: dict, recipe_keys: set[str]) -> None:
    """Each key must be a `trl-sdar train` recipe key or an `accelerate launch` option, and not one compare sets."""
    from trl_sdar.commands.recipe.launch import check_launch_args

    for key in overrides:
        if key in SET_BY_COMPARE:
            _fail(f"{where} sets {key!r}, which `trl-sdar compare` sets for every run; remove it "
                  "(the starting model is the spec's top-level model_name_or_path).")  # fmt: skip
        if key not in recipe_keys:
            try:
                check_launch_args([f"--{key}"])
            except ValueError as error:
                raise CompareSpecError(f"{where}: {error}") from None


def _load_yaml(path: Path, what: str) -> dict:
    if not path.is_file():
        _fail(f"{what} {str(path)!r} does not exist.")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise CompareSpecError(f"{what} {path} is not valid YAML ({' '.join(str(error).split())}).") from None
    if not isinstance(loaded, dict):
        _fail(f"{what} {path} must be a YAML mapping of keys to values.")
    return loaded


def _eval_spec(raw: Any) -> EvalSpec:
    if not isinstance(raw, dict) or "manifest" not in raw:
        _fail(f"eval={raw!r} is not valid; expected a mapping with at least `manifest` (a manifest name or file).")
    _check_keys("eval", raw, [f.name for f in fields(EvalSpec)])
    values = dict(raw)
    if "seeds" in values:
        values["seeds"] = _seed_tuple("eval.seeds", values["seeds"])
    if values.get("task_types") is not None:
        types = values["task_types"]
        if not isinstance(types, list) or not types or not all(isinstance(t, str) and t for t in types):
            _fail(f"eval.task_types={types!r} is not valid; expected a non-empty list of task type names, "
                  "e.g. [pick_and_place_simple].")  # fmt: skip
        values["task_types"] = tuple(types)
    at_least = {"num_tasks": 1, "batch_size": 1, "max_turns": 1, "max_turn_tokens": 1, "history_window": 0}
    for key, low in at_least.items():
        value = values.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            _fail(f"eval.{key}={value!r} is not valid; expected an integer >= {low}.")
    temperature = values.get("temperature", 0.4)
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature > 0:
        _fail(f"eval.temperature={temperature!r} is not valid; expected a number > 0 (paper: 0.4).")
    choices = {"rollout_unit": ("turn", "episode"), "parser": ("reference", "strict")}
    for key, valid in choices.items():
        if values.get(key) is not None and values[key] not in valid:
            _fail(f"eval.{key}={values[key]!r} is not valid; expected one of {list(valid)}.")
    return EvalSpec(**values)


def _methods(raw: Any, recipe_keys: set[str]) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict) or not raw:
        _fail(f"methods={raw!r} is not valid; expected a mapping of method names to recipe overrides, "
              "e.g. {grpo: {sdar_coef: 0.0}, sdar: {}}.")  # fmt: skip
    methods = {}
    for name, overrides in raw.items():
        if not isinstance(name, str) or not _NAME_RE.match(name):
            _fail(f"method name {name!r} is not valid; expected letters, digits, '_', '.', '-' (a folder name).")
        overrides = _mapping(f"methods.{name}", overrides)
        check_recipe_keys(f"methods.{name}", overrides, recipe_keys)
        shared = [key for key in overrides if key in SHARED_WITH_EVAL]
        if shared:
            _fail(f"methods.{name} sets {shared[0]!r}, which the evaluation shares across methods; "
                  "set it in `overrides` (every method) instead.")  # fmt: skip
        methods[name] = overrides
    return methods


SPEC_KEYS = [f.name for f in fields(CompareSpec)]


def load_spec(path: str | Path, output_dir: str | Path | None = None) -> CompareSpec:
    """Read and check a comparison spec; `output_dir` (e.g. from the command line) replaces the spec's."""
    path = Path(path)
    raw = _load_yaml(path, "comparison spec")
    _check_keys("spec", raw, SPEC_KEYS)
    for key in ("base_recipe", "methods", "seeds", "eval"):
        if key not in raw:
            _fail(f"spec {path} lacks {key!r} (required: base_recipe, methods, seeds, eval; optional: "
                  "name, model_name_or_path, output_dir, overrides, time_reference).")  # fmt: skip
    base = Path(str(raw["base_recipe"]))
    if not base.is_file() and (path.parent / base).is_file():
        base = path.parent / base
    if not base.is_file():
        _fail(f"base_recipe={raw['base_recipe']!r} does not exist (give a `trl-sdar train` recipe, relative to the "
              "working directory or to the spec).")  # fmt: skip
    base_recipe = _load_yaml(base, "base_recipe")
    recipe_keys = set(recipe_field_defaults())
    check_recipe_keys("base_recipe", {k: v for k, v in base_recipe.items() if k not in SET_BY_COMPARE}, recipe_keys)
    overrides = _mapping("overrides", raw.get("overrides"))
    check_recipe_keys("overrides", overrides, recipe_keys)
    methods = _methods(raw["methods"], recipe_keys)
    reference = raw.get("time_reference")
    if reference is not None and reference not in methods:
        _fail(f"time_reference={reference!r} is not one of the methods {list(methods)}.")
    model = raw.get("model_name_or_path")
    if model is not None and not isinstance(model, str):
        _fail(f"model_name_or_path={model!r} is not valid; expected a model folder, a hub id or builtin:NAME.")
    out = output_dir if output_dir is not None else raw.get("output_dir")
    if out is None:
        _fail("output_dir is missing: set it in the spec or pass --output-dir.")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        _fail(f"name={name!r} is not valid; expected letters, digits, '_', '.', '-'.")
    return CompareSpec(
        name=name,
        base_recipe=base,
        model_name_or_path=model,
        output_dir=Path(str(out)),
        methods=methods,
        seeds=_seed_tuple("seeds", raw["seeds"]),
        eval=_eval_spec(raw["eval"]),
        overrides=overrides,
        time_reference=reference,
    )


def base_recipe_values(spec: CompareSpec) -> dict[str, Any]:
    """The base recipe with the common overrides and the starting model applied (what every method shares)."""
    recipe = {**_load_yaml(spec.base_recipe, "base_recipe"), **spec.overrides}
    if spec.model_name_or_path is not None:
        recipe["model_name_or_path"] = spec.model_name_or_path
    if not recipe.get("model_name_or_path"):
        _fail(f"model_name_or_path is set neither in the spec nor in base_recipe {spec.base_recipe}.")
    return recipe


def plan_runs(spec: CompareSpec) -> list[RunPlan]:
    """Every (method, seed) run, methods in spec order, seeds inside: its complete recipe and folder."""
    shared = base_recipe_values(spec)
    plans = []
    for method, overrides in spec.methods.items():
        for seed in spec.seeds:
            run_dir = spec.output_dir / "runs" / method / f"seed{seed}"
            recipe = {**shared, **overrides, "seed": seed, "output_dir": str(run_dir),
                      "run_name": f"{spec.name}_{method}_seed{seed}"}  # fmt: skip
            plans.append(RunPlan(method, seed, recipe, run_dir))
    return plans


def only_methods(spec: CompareSpec, names: tuple[str, ...]) -> CompareSpec:
    """The spec with only the methods `names` (in the spec's order); an unknown name is an error naming the valid
    ones. The time reference stays the full spec's, so the summary of a part says what it is compared with."""
    unknown = [name for name in names if name not in spec.methods]
    if unknown:
        raise CompareSpecError(f"--methods {','.join(unknown)}: not in the spec; its methods are "
                               f"{', '.join(spec.methods)}.")  # fmt: skip
    reference = time_reference(spec)
    methods = {name: overrides for name, overrides in spec.methods.items() if name in names}
    return replace(spec, methods=methods, time_reference=reference)


def only_seeds(spec: CompareSpec, seeds: tuple[int, ...]) -> CompareSpec:
    """The spec with only the training seeds `seeds` (in the spec's order); a seed the spec lacks is an error naming
    the spec's seeds. The evaluation's seeds are not touched."""
    unknown = [seed for seed in seeds if seed not in spec.seeds]
    if unknown:
        raise CompareSpecError(f"--seeds {','.join(map(str, unknown))}: not in the spec; its seeds are "
                               f"{', '.join(map(str, spec.seeds))}.")  # fmt: skip
    return replace(spec, seeds=tuple(seed for seed in spec.seeds if seed in seeds))


def time_reference(spec: CompareSpec) -> str:
    """The method time ratios are relative to: the spec's, else `grpo` when present, else the first method."""
    if spec.time_reference is not None:
        return spec.time_reference
    return "grpo" if "grpo" in spec.methods else next(iter(spec.methods))
