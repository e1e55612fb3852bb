"""`trl-sdar compare`: methods × seeds trained as `trl-sdar train` subprocesses, evaluated on a pinned manifest,
summarised consistently with the runs' own reports and logs; resumable; one-line spec errors."""

import json
import statistics
from pathlib import Path

import pytest
import yaml

from trl_sdar.cli import main
from trl_sdar.commands.compare.spec import CompareSpecError, load_spec, plan_runs

RECIPE = str(Path(__file__).parents[1] / "data" / "tiny_webshop.yaml")
ROOT = Path(__file__).parents[2]
PNG = b"\x89PNG\r\n\x1a\n"
_OVERRIDES = {"max_steps": 2, "save_strategy": "steps", "save_steps": 1}


def _spec(tmp_path, model: str, **changes) -> Path:
    spec = {
        "name": "tiny",
        "base_recipe": RECIPE,
        "model_name_or_path": model,
        "output_dir": str(tmp_path / "out"),
        "overrides": _OVERRIDES,
        "methods": {"grpo": {"sdar_coef": 0.0}, "sdar": {}},
        "seeds": [0, 1],
        "eval": {"manifest": "webshop_builtin_eval128", "num_tasks": 3, "seeds": [0, 1]},
        **changes,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _finite(history, key):
    return [e[key] for e in history if isinstance(e, dict) and "loss" in e and key in e]


def test_compare_trains_evaluates_summarises_and_resumes(tmp_path, tiny_model_dir, capsys):
    spec_path = _spec(tmp_path, tiny_model_dir)
    main(["compare", str(spec_path)])
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert [(r["method"], r["seed"]) for r in summary["runs"]] == [("grpo", 0), ("grpo", 1), ("sdar", 0), ("sdar", 1)]
    base = json.loads((out / "base" / "compare_eval.json").read_text())
    assert base["task_ids"] == [0, 1, 2] and base["seeds"] == [0, 1] and base["model"] == tiny_model_dir
    for row in summary["runs"]:
        run = Path(row["run_dir"])
        recipe = yaml.safe_load((run / "recipe.yaml").read_text())
        assert recipe["seed"] == row["seed"] and recipe["model_name_or_path"] == tiny_model_dir
        assert recipe.get("sdar_coef") == (0.0 if row["method"] == "grpo" else None)  # sdar: the recipe's default
        after = json.loads((run / "compare_eval.json").read_text())
        assert after["model"] == str(run) and after["task_ids"] == [0, 1, 2]
        assert row["success_after"] == after["success_rate"] and row["score_after"] == after["mean_score"]
        assert row["success_before"] == base["success_rate"]
        assert (row["valid_format_before"], row["valid_format_after"]) == (
            base["valid_format_rate"], after["valid_format_rate"])  # fmt: skip
        assert row["success_gain"] == pytest.approx(after["success_rate"] - base["success_rate"])
        won = [e["won"] for seed in after["per_seed"] for e in seed["episodes"]]
        assert (row["episodes_after"]["wins"], row["episodes_after"]["episodes"]) == (sum(won), 6)  # 3 tasks × 2 seeds
        history = json.loads((run / "log_history.json").read_text())
        step_times = _finite(history, "step_time")
        assert len(step_times) == 2 and row["steps"] == 2
        assert row["train_success_per_step"] == _finite(history, "env/webshop/success")
        assert row["median_step_time_s"] == pytest.approx(statistics.median(step_times))
        assert row["train_runtime_s"] == history[-1]["train_runtime"] and row["train_wall_s"] > row["train_runtime_s"]
        gaps = _finite(history, "sdar/teacher_gap_mean")
        assert (row["final_teacher_gap"] == gaps[-1]) if row["method"] == "sdar" else row["final_teacher_gap"] is None
    for method in ("grpo", "sdar"):
        rows = [r for r in summary["runs"] if r["method"] == method]
        stats = summary["methods"][method]["median_step_time_s"]
        values = [r["median_step_time_s"] for r in rows]
        assert stats["n"] == 2 and stats["mean"] == pytest.approx(statistics.fmean(values))
        assert stats["std"] == pytest.approx(statistics.stdev(values))
        assert summary["methods"][method]["success_after"]["mean"] == pytest.approx(
            statistics.fmean(r["success_after"] for r in rows)
        )
    ratios, methods = summary["time_ratios"], summary["methods"]
    assert ratios["grpo"]["step_time"] == 1.0
    expected = methods["sdar"]["median_step_time_s"]["mean"] / methods["grpo"]["median_step_time_s"]["mean"]
    assert ratios["sdar"]["step_time"] == pytest.approx(expected)
    results = (out / "results.md").read_text()
    assert "| sdar | (base recipe) |" in results and "| grpo | sdar_coef: 0.0 |" in results
    assert f"{expected:.2f}" in results
    for name in ("methods_training.png", "methods_eval.png"):
        assert (out / "plots" / name).read_bytes()[:8] == PNG
    assert "[compare] train grpo seed 0" in capsys.readouterr().err

    # a second invocation trains and evaluates nothing: every run and eval is reused
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.name in ("model.safetensors", "compare_eval.json")}
    main(["compare", str(spec_path)])
    err = capsys.readouterr().err
    assert "[compare] train " not in err and "[compare] eval " not in err and err.count("[compare] skip") == 9
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}
    assert json.loads((out / "summary.json").read_text())["runs"] == summary["runs"]

    # a run killed after its last checkpoint (step 2 = max_steps) but before its final save resumes from the one
    # before: from checkpoint-2, Trainer would train a third step; nothing else runs again
    killed = out / "runs" / "grpo" / "seed1"
    (killed / "train_summary.json").unlink()
    main(["compare", str(spec_path)])
    err = capsys.readouterr().err
    assert "[compare] train grpo seed 1, resuming from checkpoint-1" in err and err.count("[compare] train ") == 1
    assert f"--resume_from_checkpoint {killed / 'checkpoint-1'}" in (killed / "train.log").read_text()
    resumed = json.loads((out / "summary.json").read_text())["runs"][1]
    assert resumed["resumed_from"] == str(killed / "checkpoint-1") and resumed["steps"] == 2
    assert len(resumed["step_times_s"]) == 2  # step 1 from before the kill, step 2 after

    # a part of the comparison (--methods), as a second process would run it: its own runs only, nothing retrained
    main(["compare", str(spec_path), "--methods", "sdar"])
    err = capsys.readouterr().err
    assert "[compare] train " not in err and "[compare] run 1/2: sdar seed 0" in err
    part = json.loads((out / "summary.json").read_text())
    assert [r["method"] for r in part["runs"]] == ["sdar", "sdar"] and part["time_reference"] == "grpo"
    assert part["time_ratios"]["sdar"] == {"step_time": None, "train_wall": None}  # grpo is not in this part
    assert not list(out.rglob(".*.tmp"))  # evaluations are written whole, through a temporary name

    # one seed of one method (--seeds), as a lane sharing a method's seeds with another would run it
    main(["compare", str(spec_path), "--methods", "sdar", "--seeds", "1"])
    err = capsys.readouterr().err
    assert "[compare] train " not in err and "[compare] run 1/1: sdar seed 1" in err
    assert [(r["method"], r["seed"]) for r in json.loads((out / "summary.json").read_text())["runs"]] == [("sdar", 1)]

    # --summary-only trains and evaluates nothing: the runs trained and evaluated are summarised, the others listed
    unfinished = out / "runs" / "grpo" / "seed0" / "train_summary.json"
    unfinished.rename(unfinished.with_suffix(".away"))
    (out / "runs" / "sdar" / "seed1" / "compare_eval.json").unlink()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.name in ("model.safetensors", "compare_eval.json")}
    main(["compare", str(spec_path), "--summary-only"])
    err = capsys.readouterr().err
    assert "[compare] train " not in err and "[compare] eval " not in err
    assert "[compare] missing grpo seed 0: not trained" in err
    assert "[compare] missing sdar seed 1: not evaluated" in err
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}
    partial = json.loads((out / "summary.json").read_text())
    assert [(r["method"], r["seed"]) for r in partial["runs"]] == [("grpo", 1), ("sdar", 0)]
    assert partial["missing_runs"] == [{"method": "grpo", "seed": 0, "reason": "not trained"},
                                       {"method": "sdar", "seed": 1, "reason": "not evaluated"}]  # fmt: skip
    assert "grpo seed 0 (not trained); sdar seed 1 (not evaluated)" in (out / "results.md").read_text()
    unfinished.with_suffix(".away").rename(unfinished)

    # changed evaluation settings re-evaluate every model and train nothing
    main(
        ["compare", str(_spec(tmp_path, tiny_model_dir, eval={"manifest": "webshop_builtin_eval128", "num_tasks": 2}))]
    )
    err = capsys.readouterr().err
    assert err.count("[compare] eval ") == 5 and "[compare] train " not in err
    again = json.loads((out / "summary.json").read_text())
    assert again["eval"]["num_tasks"] == 2 and all(len(r["success_after_per_eval_seed"]) == 1 for r in again["runs"])
    # only the number of tasks changed: the pinned manifest is rewritten under the same path, so the same eval
    # arguments no longer mean the same tasks, and every model is evaluated again
    main(
        ["compare", str(_spec(tmp_path, tiny_model_dir, eval={"manifest": "webshop_builtin_eval128", "num_tasks": 3}))]
    )
    err = capsys.readouterr().err
    assert err.count("[compare] eval ") == 5 and "[compare] train " not in err
    assert all(r["episodes_after"]["episodes"] == 3 for r in json.loads((out / "summary.json").read_text())["runs"])

    # the same folder with a different recipe for a run is refused, not mixed
    changed = _spec(tmp_path, tiny_model_dir, overrides={**_OVERRIDES, "learning_rate": 0.01})
    message = _error(["compare", str(changed)])
    assert "trained with a different recipe (changed: learning_rate)" in message


def _error(argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    message = str(exit_info.value)
    assert "\n" not in message and message.startswith("trl-sdar compare: error:"), message
    return message


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"methdos": {}}, "Unknown spec key 'methdos'. Did you mean: methods?"),
        (
            {"methods": {"grpo": {"sdar_coeff": 0.0}}},
            "methods.grpo: Unknown recipe key 'sdar_coeff'. Did you mean: sdar_coef",
        ),
        ({"methods": {"grpo": {"seed": 3}}}, "methods.grpo sets 'seed', which `trl-sdar compare` sets"),
        ({"methods": {"grpo": {"max_turns": 3}}}, "methods.grpo sets 'max_turns', which the evaluation shares"),
        ({"methods": {"a b": {}}}, "method name 'a b' is not valid"),
        ({"methods": []}, "methods=[] is not valid; expected a mapping"),
        ({"seeds": [0, 0]}, "seeds=[0, 0] repeats a seed"),
        ({"seeds": "0,1"}, "seeds='0,1' is not valid; expected a non-empty list of integers"),
        ({"base_recipe": "/no/recipe.yaml"}, "base_recipe='/no/recipe.yaml' does not exist"),
        (
            {"eval": {"manifest": "webshop_builtin_eval128", "num_task": 2}},
            "Unknown eval key 'num_task'. Did you mean: num_tasks?",
        ),
        (
            {"eval": {"manifest": "webshop_builtin_eval128", "num_tasks": 0}},
            "eval.num_tasks=0 is not valid; expected an integer >= 1",
        ),
        ({"eval": {"manifest": "webshop_builtin_eval128", "temperature": 0}}, "eval.temperature=0 is not valid"),
        (
            {"eval": {"manifest": "webshop_builtin_eval128", "rollout_unit": "step"}},
            "eval.rollout_unit='step' is not valid; expected one of ['turn', 'episode']",
        ),
        ({"eval": {"seeds": [0]}}, "expected a mapping with at least `manifest`"),
        (
            {"eval": {"manifest": "alfworld_builtin_eval128"}},
            "is for env_name='alfworld' but the base recipe trains env_name='webshop'",
        ),
        (
            {"eval": {"manifest": "no_such_manifest"}},
            "eval.manifest: --manifest 'no_such_manifest' is neither a file nor one of",
        ),
        (
            {"eval": {"manifest": "webshop_builtin_eval128", "num_tasks": 500}},
            "eval.num_tasks=500 is more than the 128 tasks",
        ),
        ({"time_reference": "ppo"}, "time_reference='ppo' is not one of the methods ['grpo', 'sdar']"),
    ],
)
def test_spec_errors_are_one_line(changes, expected, tmp_path):
    message = _error(["compare", str(_spec(tmp_path, "builtin:tiny", **changes))])
    assert expected in message, message
    assert not (tmp_path / "out" / "runs").exists()  # nothing trained


def test_methods_option_names_the_valid_methods(tmp_path):
    message = _error(["compare", str(_spec(tmp_path, "builtin:tiny")), "--methods", "sdar,naive"])
    assert message.endswith("--methods naive: not in the spec; its methods are grpo, sdar.")


def test_seeds_option_names_the_valid_seeds(tmp_path):
    spec = str(_spec(tmp_path, "builtin:tiny"))
    assert _error(["compare", spec, "--seeds", "1,5"]).endswith("--seeds 5: not in the spec; its seeds are 0, 1.")
    assert "'one' is not a list of integer seeds; expected e.g. 0,2" in _error(["compare", spec, "--seeds", "one"])
    assert not (tmp_path / "out" / "runs").exists()


def test_summary_only_without_a_starting_evaluation_is_one_line(tmp_path):
    message = _error(["compare", str(_spec(tmp_path, "builtin:tiny")), "--summary-only"])
    assert "--summary-only: the starting model (plain) has no evaluation with these settings" in message
    assert "run `trl-sdar compare` without it to make one" in message
    assert not (tmp_path / "out" / "runs").exists() and not (tmp_path / "out" / "base").exists()


def test_bad_yaml_and_missing_fields(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- list\n")
    assert "must be a YAML mapping" in _error(["compare", str(bad)])
    bad.write_text(yaml.safe_dump({"base_recipe": RECIPE, "methods": {"sdar": {}}, "seeds": [0]}))
    assert "lacks 'eval'" in _error(["compare", str(bad)])
    assert "does not exist" in _error(["compare", str(tmp_path / "missing.yaml")])


@pytest.mark.parametrize("name", ["quickstart_cpu", "alfworld_qwen2.5-3b"])
def test_shipped_specs_plan_the_paper_baselines(name, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)  # recipes name their base recipe and accelerate config relative to the repository
    spec = load_spec(ROOT / "recipes" / "compare" / f"{name}.yaml")
    assert len(spec.seeds) >= 3
    assert spec.methods["grpo"] == {"sdar_coef": 0.0} and spec.methods["sdar"] == {}
    assert spec.methods["naive_opsd"] == {"distill_loss_type": "naive"}
    plans = plan_runs(spec)
    assert len(plans) == len(spec.methods) * len(spec.seeds)
    assert len({p.run_dir for p in plans}) == len(plans) and {p.recipe["seed"] for p in plans} == set(spec.seeds)
    if name.startswith("alfworld"):
        assert all(p.recipe["accelerate_config"] == "recipes/accelerate/deepspeed_zero2.yaml" for p in plans)
        assert spec.eval.manifest == "alfworld_builtin_eval128" and spec.eval.seeds == (0, 1, 2)
    else:  # a CPU recipe parses here as `trl-sdar train` will parse it (the GPU ones need bf16 hardware)
        from trl_sdar.commands.recipe.launch import parse_train_args

        for plan in plans[:: len(spec.seeds)]:
            recipe = tmp_path / f"{plan.method}.yaml"
            recipe.write_text(yaml.safe_dump(plan.recipe))
            script, training, _, launch, _ = parse_train_args(["--config", str(recipe)])
            assert training.seed == plan.seed and script.rollout_unit == "turn" and launch == []
    main(["compare", str(ROOT / "recipes" / "compare" / f"{name}.yaml"), "--dry-run", "--output-dir", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(plans) + 1 and all(line.startswith("trl-sdar train --config") for line in lines[:-1])
    assert all(str(tmp_path / "runs") in line for line in lines[:-1])
    for line, plan in zip(lines[:-1], plans, strict=False):  # every printed recipe exists and holds the run's recipe
        written = yaml.safe_load(Path(line.split()[3]).read_text())
        assert written.pop("output_dir").startswith(str(tmp_path / "runs"))  # --output-dir moved the runs
        assert written == {k: v for k, v in plan.recipe.items() if k != "output_dir"}
    assert not (tmp_path / "runs").exists()  # a dry run leaves the run folders alone


def test_base_recipe_with_unknown_key_is_refused(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(Path(RECIPE).read_text() + "lerning_rate: 0.1\n")
    with pytest.raises(CompareSpecError, match="base_recipe: Unknown recipe key 'lerning_rate'. Did you mean"):
        load_spec(_spec(tmp_path, "builtin:tiny", base_recipe=str(recipe)))


def test_failed_run_is_one_line_naming_its_log(tmp_path):
    # the training subprocess refuses this recipe; compare stops with its error and the log's path
    spec = _spec(tmp_path, "builtin:tiny", methods={"bad": {"sdar_coef": 0.0, "rl_loss_coef": 0.5}}, seeds=[0])
    message = _error(["compare", str(spec)])
    log = tmp_path / "out" / "runs" / "bad" / "seed0" / "train.log"
    assert "training bad seed 0 failed (exit 1)" in message and f"(log: {log})" in message
    assert "rl_loss_coef=0.5 has no effect with sdar_coef=0.0" in message

    from trl_sdar.commands.compare.runner import _exit_reason

    assert _exit_reason(-9).startswith("killed by signal 9 (SIGKILL: often the out-of-memory killer")


def test_skill_grpo_is_evaluated_with_skills_before_and_after(tmp_path, monkeypatch):
    from trl_sdar.commands.compare import runner

    spec = load_spec(_spec(tmp_path, "builtin:tiny", methods={"skill_grpo": {"sdar_coef": 0.0,
                                                                         "student_sees_skills": True}}))  # fmt: skip
    plan = plan_runs(spec)[0]
    assert plan.recipe["student_sees_skills"] is True
    argv = runner.eval_argv(spec, str(plan.run_dir), runner.eval_manifest(spec), True)
    assert argv[-1] == "--student-skills" and argv[argv.index("--max-turns") + 1] == "2"
    assert argv[argv.index("--rollout-unit") + 1] == "episode" and argv[argv.index("--max-turn-tokens") + 1] == "8"
    assert "--student-skills" not in runner.eval_argv(spec, "m", "x", False)


def test_method_figures_plot_the_seed_mean_and_band(tmp_path):
    from trl_sdar.commands.plot.figures import build_method_figures, method_eval_figure

    def run(name, gaps, success):
        folder = tmp_path / name
        folder.mkdir()
        history = [{"step": i + 1, "loss": 0.0, "sdar/teacher_gap_mean": g, "env/webshop/success": s}
                   for i, (g, s) in enumerate(zip(gaps, success))]  # fmt: skip
        (folder / "log_history.json").write_text(json.dumps(history))
        return folder

    groups = {"sdar": [run("a", [-0.1, -0.2], [0.0, 0.5]), run("b", [-0.3, -0.4], [1.0, 0.5])],
              "grpo": [run("c", [-0.5, -0.5], [0.0, 0.0])]}  # fmt: skip
    (fig,) = build_method_figures(groups).values()
    success_ax, gap_ax = fig.axes  # no reward or gate logged: those panels are left out
    sdar_line = gap_ax.lines[0]
    assert sdar_line.get_label() == "sdar (n=2)" and list(sdar_line.get_ydata()) == pytest.approx([-0.2, -0.3])
    band = gap_ax.collections[0].get_paths()[0].vertices[:, 1]
    assert min(band) == pytest.approx(-0.4) and max(band) == pytest.approx(-0.1)
    assert list(success_ax.lines[0].get_ydata()) == pytest.approx([0.5, 0.5])
    bars = method_eval_figure({"sdar": 0.25, "grpo": 0.25}, {"sdar": [0.5, 1.0], "grpo": [0.0]}).axes[0].patches
    assert [b.get_height() for b in bars] == pytest.approx([0.25, 0.75, 0.25, 0.0])
    with pytest.raises(ValueError, match="at least one run directory"):
        build_method_figures({"sdar": []})


def test_task_types_of_the_recipe_are_the_ones_evaluated(tmp_path):
    from trl_sdar.commands.compare import runner

    spec = load_spec(_spec(tmp_path, "builtin:tiny", overrides={**_OVERRIDES, "task_types": ["apparel"]}))
    manifest = runner.eval_manifest(spec)
    assert manifest == "webshop_builtin_eval128"  # eval selects the types, then takes the first num_tasks
    argv = runner.eval_argv(spec, "m", manifest, False)
    assert argv[argv.index("--task-types") + 1] == "apparel" and argv[argv.index("--num-tasks") + 1] == "3"
    assert plan_runs(spec)[0].recipe["task_types"] == ["apparel"]
    spec = load_spec(_spec(tmp_path, "builtin:tiny", eval={"manifest": "webshop_builtin_eval128",
                                                             "task_types": ["footwear", "apparel"]}))  # fmt: skip
    argv = runner.eval_argv(spec, "m", runner.eval_manifest(spec), False)
    assert argv[argv.index("--task-types") + 1] == "footwear,apparel" and "--num-tasks" not in argv
    plain = load_spec(_spec(tmp_path, "builtin:tiny"))
    assert "--task-types" not in runner.eval_argv(plain, "m", runner.eval_manifest(plain), False)
    assert runner.eval_manifest(plain).endswith("eval_manifest.json")  # without types: the first 3 ids pinned


@pytest.mark.parametrize("value", [[], "apparel", [""], [3]])
def test_bad_eval_task_types_are_one_line(value, tmp_path):
    message = _error(["compare", str(_spec(tmp_path, "builtin:tiny", eval={"manifest": "webshop_builtin_eval128",
                                                                          "task_types": value}))])  # fmt: skip
    assert f"eval.task_types={value!r} is not valid; expected a non-empty list of task type names" in message


def test_a_method_cannot_train_on_other_task_types_than_the_evaluation(tmp_path):
    message = _error(["compare", str(_spec(tmp_path, "builtin:tiny", methods={"a": {"task_types": ["apparel"]}}))])
    assert "methods.a sets 'task_types', which the evaluation shares across methods" in message


STUDY_SPECS = sorted(p.stem for p in (ROOT / "recipes" / "compare").glob("*_cpu.yaml") if p.stem != "quickstart_cpu")


@pytest.mark.parametrize("name", STUDY_SPECS)
def test_study_specs_plan_runs_that_parse_as_train_recipes(name, monkeypatch, tmp_path):
    from trl_sdar.commands.compare import runner
    from trl_sdar.commands.recipe.launch import parse_train_args

    monkeypatch.chdir(ROOT)
    spec = load_spec(ROOT / "recipes" / "compare" / f"{name}.yaml")
    plans = plan_runs(spec)
    assert {p.method for p in plans} == set(spec.methods) and spec.methods["grpo"] == {"sdar_coef": 0.0}
    for plan in plans:
        recipe = tmp_path / f"{plan.method}_{plan.seed}.yaml"
        recipe.write_text(yaml.safe_dump(plan.recipe))
        script, training, _, launch, _ = parse_train_args(["--config", str(recipe)])
        assert training.use_cpu and launch == [] and script.rollout_unit == "turn" and training.seed == plan.seed
        assert script.task_types == spec.overrides.get("task_types")
    argv = runner.eval_argv(spec, "m", "x", False)
    if "task_types" in spec.overrides:  # trained on one type, evaluated on the manifest's first tasks of it
        assert argv[argv.index("--task-types") + 1] == ",".join(spec.overrides["task_types"])
        assert plans[0].recipe["save_strategy"] == "steps"  # a run killed by a session end resumes
