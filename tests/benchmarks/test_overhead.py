"""benchmarks/overhead.py and sweep.py on the tiny model: numbers are real, arms step in turn, the teacher bench
compares, turn rows share their task's context, a sweep keeps and skips finished points. (The turn-taking itself:
test_harness.py.)"""

import json
import math

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("overhead")


@pytest.fixture(scope="module")
def overhead_arms(load_benchmark):
    return load_benchmark("overhead_arms")


@pytest.fixture(scope="module")
def overhead_layout(load_benchmark):
    return load_benchmark("overhead_layout")


@pytest.fixture(scope="module")
def sweep(bench, load_benchmark):
    module = load_benchmark("sweep")
    assert module.bench is bench  # the sweep runs this very module's run_benchmark (monkeypatched below)
    return module


def test_benchmark_tiny_arms_side_by_side(bench, tmp_path):
    settings = bench.Settings(
        model="tiny", finetune="full", kinds="ema", unshared=True, steps=2, batch=4, num_generations=2,
        max_completion_length=8, context_tokens=64, teacher_repeats=1,
    )  # fmt: skip
    output = tmp_path / "bench.json"
    bench.run_benchmark(settings, output)
    report = json.loads(output.read_text())
    arms = report["arms"]
    assert list(arms) == ["grpo", "sdar-ema", "sdar-ema-unshared"]
    for name, arm in arms.items():
        assert len(arm["steps"]) == 2 and arm["measured_steps"] == 1
        for key in ("step_time_s", "rollout_time_s", "resident_mb", "peak_mem_mb"):
            assert arm[key] > 0, (name, key)
        assert (arm["teacher_time_s"] > 0) == (name != "grpo"), name
    # one arm steps at a time, in a fixed cycle: step k of every arm begins before step k + 1 of any
    begins = [(arm["steps"][k]["begin_s"], k, name) for name, arm in arms.items() for k in range(2)]
    assert [(k, name) for _, k, name in sorted(begins)] == [(k, name) for k in range(2) for name in arms]
    # the EMA teacher of a fully fine-tuned model is a frozen copy: one more model resident
    assert arms["sdar-ema"]["resident_mb"] > 1.2 * arms["grpo"]["resident_mb"]
    for name in arms:
        if name != "grpo":
            ratios = report["comparison"][name]["ratios"]
            assert all(math.isfinite(v) and v > 0 for v in ratios.values()), name
            assert set(report["comparison"][name]["targets_met"]) == {"step_time", "peak_mem"}
    teacher = report["teacher"]
    assert teacher["arm"] == "sdar-ema" and teacher["supported"] is True
    assert teacher["tokens_read_shared"] < teacher["tokens_read_unshared"] / 1.5  # GRPO groups share the prompt
    assert teacher["max_abs_logp_diff"] <= 1e-5
    assert report["machine"]["device"] and report["settings"]["context_tokens"] == 64
    assert "teacher alone" in bench.format_table(report)


def test_cli_rejects_bad_settings(bench, overhead_arms):
    with pytest.raises(SystemExit):
        bench.parse_args(["--kinds", "live,frozen"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--batch", "6", "--num-generations", "4"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--layout", "turn", "--turns", "0"])
    settings, output = bench.parse_args(["--kinds", "base", "--unshared", "--layout", "episode"])
    assert overhead_arms.arm_names(settings) == [
        "grpo", "sdar-base", "sdar-base-unshared"
    ]  # fmt: skip


def test_teacher_only_scores_one_batch_with_every_kind(bench, tmp_path):
    settings = bench.Settings(
        model="tiny", finetune="lora", kinds="live,base", teacher_only=True, batch=4, num_generations=2,
        max_completion_length=8, context_tokens=64, teacher_repeats=1,
    )  # fmt: skip
    report = bench.run_benchmark(settings, tmp_path / "teacher.json")
    assert "arms" not in report and set(report["teacher_only"]) == {"live", "base"}
    for kind, t in report["teacher_only"].items():
        assert t["rows"] == 4 and t["shared_s"] > 0 and t["unshared_s"] > 0, kind
        assert t["tokens_read_shared"] < t["tokens_read_unshared"] / 1.5 and t["max_abs_logp_diff"] <= 1e-5, kind
    assert "teacher base" in bench.format_table(report)


def test_turn_layout_rows_are_turns_of_episodes_under_their_task_context(
    bench, overhead_arms, overhead_layout, tiny_model_dir, tmp_path
):
    settings = bench.Settings(
        model="tiny", finetune="lora", layout="turn", kinds="live", batch=4, num_generations=2,
        max_completion_length=8, context_tokens=1850, turns=3,
    )  # fmt: skip  # the general skills take 1793 tiny-tokens: past them, each task type's own skills follow
    trainer = overhead_arms.build_trainer("sdar-live", tiny_model_dir, settings, str(tmp_path))
    trainer.model.train()
    episodes = next(iter(trainer.get_train_dataloader()))
    batch = trainer._generate_and_score_completions(episodes)
    rows, turns = settings.batch * settings.turns, settings.turns
    assert batch["prompt_ids"].size(0) == rows and float(batch["num_rows_in_batch"]) == rows  # no padding row
    assert batch["completion_mask"].sum(1).tolist() == [8] * rows  # completions forced to full length
    tokenizer, contexts = trainer.processing_class, {}
    for row in range(rows):
        task = episodes[row // turns]  # rows come episode by episode, turn by turn
        context = trainer._context_tokenizer(overhead_layout.skill_context(tokenizer, task["task_type"], 1850))
        teacher = batch["teacher_prompt_ids"][row][batch["teacher_prompt_mask"][row].bool()].tolist()
        prompt = batch["prompt_ids"][row][batch["prompt_mask"][row].bool()].tolist()
        assert teacher == context + prompt, row
        contexts.setdefault(task["task_id"], set()).add(tuple(context))
        text = tokenizer.decode(prompt)
        if row % turns:  # a later step: its number and the last (at most 2) steps of history
            assert f"This is step {row % turns + 1}." in text and f"Your last {min(row % turns, 2)} " in text, row
    # two tasks (one per GRPO group of 2 episodes), each with one context for all its rows, different from the other's
    assert [e["task_id"] for e in episodes][::2] == [e["task_id"] for e in episodes][1::2]
    assert len(contexts) == 2 and all(len(c) == 1 for c in contexts.values())
    assert len(set.union(*contexts.values())) == 2 and all(len(next(iter(c))) >= 1850 for c in contexts.values())
    shape = overhead_layout.step_shape(batch)
    assert shape["rows_per_step"] == rows and shape["completion_tokens_per_step"] == 8 * rows
    assert shape["tokens_per_step"] == int(batch["prompt_mask"].sum()) + 8 * rows


SWEEP_ARGS = [
    "--model", "tiny", "--finetune", "lora", "--layout", "turn", "--kinds", "live", "--steps", "2", "--batch", "4",
    "--num-generations", "2", "--max-completion-length", "8", "--turns", "2", "--teacher-repeats", "1",
]  # fmt: skip


def test_sweep_writes_each_point_as_it_ends_and_a_rerun_skips_it(bench, sweep, tmp_path, monkeypatch, capsys):
    output, calls, real = tmp_path / "sweep.json", [], bench.run_benchmark

    def counted(settings, *args, **kwargs):
        calls.append(settings.context_tokens)
        return real(settings, *args, **kwargs)

    monkeypatch.setattr(bench, "run_benchmark", counted)
    argv = SWEEP_ARGS + ["--context-tokens", "48", "--output", str(output)]
    sweep.main(argv)
    data, key = json.loads(output.read_text()), "context_tokens=48/finetune=lora/layout=turn"
    assert calls == [48] and list(data["points"]) == [key] and data["failed"] == {}
    report = data["points"][key]
    assert report["settings"]["turns"] == 2 and report["layout"]["rows_per_step"] == 8
    assert report["layout"]["completion_tokens_per_step"] == 64
    ratios = report["comparison"]["sdar-live"]["ratios"]
    row = next(line for line in capsys.readouterr().out.splitlines() if line.split()[:3] == ["48", "lora", "turn"])
    assert row.split()[3:] == ["8", f"{report['layout']['tokens_per_step']:,}", f"{ratios['step_time']:.2f}",
                               f"{ratios['peak_mem']:.2f}"]  # fmt: skip
    written = output.read_text()
    sweep.main(argv)  # the same sweep again: nothing to run, nothing rewritten
    assert calls == [48] and output.read_text() == written

    def failing(settings, *args, **kwargs):
        calls.append(settings.context_tokens)
        raise RuntimeError("out of memory")

    monkeypatch.setattr(bench, "run_benchmark", failing)
    with pytest.raises(SystemExit, match="1 point"):
        sweep.main(SWEEP_ARGS + ["--context-tokens", "48,96", "--output", str(output)])
    data = json.loads(output.read_text())
    assert calls == [48, 96] and list(data["points"]) == [key]  # only the new point ran; its failure is kept
    assert "out of memory" in data["failed"]["context_tokens=96/finetune=lora/layout=turn"]["error"]
    points, _ = sweep.parse_args(SWEEP_ARGS + ["--context-tokens", "48", "--steps", "3"])
    with pytest.raises(ValueError, match="--steps 2 there vs 3 now"):
        sweep.run_sweep(points, output)  # a file of a sweep with other settings is refused
    assert calls == [48, 96]


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--finetune", "lora,qlora"], "--finetune='qlora'"),
        (["--context-tokens", "250,many"], "--context-tokens='250,many'"),
        (["--context-tokens", "500,0"], "--context-tokens=0"),
        (["--layout", " , "], "--layout=' , '"),
        (["--layout", "episode,turns"], "--layout='turns'"),
        (["--turns", "0"], "--turns=0"),
    ],
)
def test_sweep_rejects_bad_grid_values_naming_the_flag(sweep, argv, flag, capsys):
    with pytest.raises(SystemExit):
        sweep.parse_args(argv)
    assert flag in capsys.readouterr().err
