"""Generators: KV-cached multi-turn generation equals re-prefilled generation; sampling uses exactly the trainer's
settings; colocated vLLM in sleep mode syncs its weights once per rollout, not once per turn."""

from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_sdar.agent.generation import HFGenerator, VLLMGenerator, make_generator


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def _play(generator, contexts, turns, seed, env_tokens, stop_after):
    """A multi-turn loop like the rollout's: append each row's output and env tokens; rows stop at their own turn.
    Returns the outputs per turn and the prefill size per call."""
    torch.manual_seed(seed)
    rows, outputs, prefill = dict(enumerate(contexts)), [], []
    for turn in range(turns):
        order = sorted(rows)
        outs = generator.generate([rows[i] for i in order], max_new_tokens=5 + turn % 3)
        outputs.append({i: o.ids for i, o in zip(order, outs, strict=True)})
        prefill.append(generator.last_prefill_tokens)
        for i, out in zip(order, outs, strict=True):
            if stop_after[i] == turn:
                del rows[i]  # the episode is over: nobody continues its row
            else:
                rows[i] = rows[i] + out.ids + env_tokens(i, turn)
    return outputs, prefill


def _env_tokens(i, turn):
    return [(17 * i + 5 * turn + k) % 300 + 3 for k in range(1 + (i + turn) % 4)]  # 1-4 tokens, row- and turn-specific


CONTEXTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24], [25, 26, 27, 28]]
STOP_AFTER = {0: 5, 1: 1, 2: 3, 3: 5}  # episodes finish at different turns


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_cached_multi_turn_generation_samples_exactly_the_reprefilled_tokens(model, tokenizer, temperature):
    common = dict(temperature=temperature, top_k=0)
    play = dict(contexts=CONTEXTS, turns=6, seed=0, env_tokens=_env_tokens, stop_after=STOP_AFTER)
    # a token the model samples early also ends a turn, so that rows stop at different lengths within a call
    first, _ = _play(HFGenerator(model, tokenizer, reuse_cache=False, **common), **play)
    rows = list(first[0].values())
    stop = min((t for ids in rows for t in ids), key=lambda t: sum(t in ids for ids in rows))  # ends some rows only
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, stop]
    reference, full = _play(HFGenerator(model, tokenizer, reuse_cache=False, **common), **play)
    cached, partial = _play(HFGenerator(model, tokenizer, **common), **play)
    assert cached == reference
    lengths = [len(ids) for turn in reference for ids in turn.values()]
    assert min(lengths) < max(lengths) and any(ids[-1] == stop for ids in reference[0].values())  # early stops
    assert partial[0] == full[0]  # nothing to reuse on the first turn
    assert all(p < f for p, f in zip(partial[1:], full[1:], strict=True))  # later turns prefill only the new tokens
    assert sum(partial[1:]) * 4 < sum(full[1:])


def test_reused_cache_gives_the_logits_of_a_full_prefill(model, tokenizer):
    generator = HFGenerator(model, tokenizer, temperature=1.0)
    torch.manual_seed(0)
    outs = generator.generate(CONTEXTS, max_new_tokens=6)
    ids = [o.ids for o in outs]
    contexts = [
        CONTEXTS[2] + ids[2] + [40, 41, 42],  # continued, another order
        CONTEXTS[0] + ids[0],  # continued without env tokens: its last token is fed again
        CONTEXTS[3] + ids[3][:2] + [43],  # its output cut short: only the common prefix is reused
        [44, 45, 46],  # a new context: prefilled in full
    ]  # row 1 is not continued
    cache = generator._reused_cache(contexts, torch.device("cpu"))
    width = max(len(c) for c in contexts)
    columns = cache.get_seq_length()
    assert 0 < columns < width and cache.layers[0].keys.shape[0] == len(contexts)
    batch = torch.full((len(contexts), width), tokenizer.pad_token_id)  # (B, W), left-padded
    mask = torch.zeros_like(batch)
    for i, c in enumerate(contexts):
        batch[i, width - len(c) :], mask[i, width - len(c) :] = torch.tensor(c), 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, W) as `generate` derives them
    with torch.no_grad():
        full = model(input_ids=batch, attention_mask=mask, position_ids=positions).logits  # (B, W, V)
        suffix = model(
            input_ids=batch[:, columns:], attention_mask=mask, position_ids=positions[:, columns:], cache=cache
        ).logits  # (B, W - C, V)
    real = mask[:, columns:].bool()
    assert (suffix[real] - full[:, columns:][real]).abs().max().item() <= 1e-5


def test_rows_not_continued_are_freed(model, tokenizer):
    generator = HFGenerator(model, tokenizer, temperature=1.0)
    with generator:
        outs = generator.generate(CONTEXTS, max_new_tokens=4)
        assert generator._cache.layers[0].keys.shape[0] == 4
        generator.generate([CONTEXTS[1] + outs[1].ids + [7]], max_new_tokens=4)
        assert generator._cache.layers[0].keys.shape[0] == 1 and len(generator._rows) == 1
    assert generator._cache is None and generator._rows == []


def _reference_sample(model, contexts, steps, *, temperature, repetition_penalty, min_p, suppress):
    """Sampling written out by hand (full forward each step): repetition penalty over every id so far, suppressed
    ids, temperature, min-p, then one multinomial draw per row, the RNG use of `generate`."""
    ids = torch.tensor(contexts)  # (B, T) equal lengths: no padding
    for _ in range(steps):
        with torch.no_grad():
            scores = model(input_ids=ids).logits[:, -1, :].float()  # (B, V)
        seen = torch.gather(scores, 1, ids)
        scores = scores.scatter(1, ids, torch.where(seen < 0, seen * repetition_penalty, seen / repetition_penalty))
        scores[:, suppress] = -float("inf")
        scores = scores / temperature
        probs = scores.softmax(-1)
        scores = scores.masked_fill(probs < min_p * probs.max(-1, keepdim=True).values, -float("inf"))
        ids = torch.cat([ids, torch.multinomial(scores.softmax(-1), 1)], dim=1)
    return ids[:, len(contexts[0]) :].tolist()


def test_rollout_samples_with_the_trainers_settings_not_the_checkpoints(model, tokenizer):
    # the checkpoint ships its own sampling defaults (Qwen2.5-Instruct: repetition_penalty=1.05, top_k=20, ...)
    config = model.generation_config
    config.repetition_penalty, config.top_k, config.top_p, config.min_p = 2.0, 3, 0.5, 0.4
    config.no_repeat_ngram_size = 1
    config.eos_token_id = tokenizer.eos_token_id
    args = SimpleNamespace(
        use_vllm=False,
        temperature=0.7,
        top_p=1.0,
        top_k=0,
        min_p=0.05,
        repetition_penalty=1.3,
        generation_kwargs={"suppress_tokens": [411, 368]},
        cache_implementation=None,
    )
    trainer = SimpleNamespace(
        args=args, processing_class=tokenizer, model=model, accelerator=SimpleNamespace(unwrap_model=lambda m: m)
    )
    contexts = [[5, 6, 7, 8, 9], [12, 13, 14, 15, 16]]
    with make_generator(trainer) as generator:
        assert isinstance(generator, HFGenerator)
        torch.manual_seed(3)
        got = [o.ids for o in generator.generate(contexts, max_new_tokens=12)]
    torch.manual_seed(3)
    expected = _reference_sample(
        model, contexts, 12, temperature=0.7, repetition_penalty=1.3, min_p=0.05, suppress=[411, 368]
    )
    assert got == expected
    assert config.repetition_penalty == 2.0 and config.top_k == 3  # the model's own config is left as it was


def test_greedy_and_bad_generation_kwargs(model, tokenizer):
    greedy = HFGenerator(model, tokenizer, temperature=0.0)
    assert greedy.config.do_sample is False and greedy.config.top_k is None
    with pytest.raises(ValueError, match="generation_kwargs must be a dict"):
        HFGenerator(model, tokenizer, generation_kwargs="top_k=3")
    assert not HFGenerator(model, tokenizer, cache_implementation="static").reuse_cache


class FakeLLM:
    """vLLM's `LLM` as TRL's colocate path uses it: sleep level 2 discards weights and KV cache; generating while
    either is asleep is an error (it would read freed memory)."""

    def __init__(self):
        self.events, self.awake = [], set()
        loader = SimpleNamespace(load_weights=lambda weights: self.events.append("load"))
        self.llm_engine = SimpleNamespace(
            model_executor=SimpleNamespace(driver_worker=SimpleNamespace(model_runner=SimpleNamespace(model=loader)))
        )

    def wake_up(self, tags):
        self.awake |= set(tags)
        self.events.append(f"wake:{','.join(tags)}")

    def sleep(self, level):
        self.awake.clear()
        self.events.append(f"sleep:{level}")

    def reset_prefix_cache(self):
        self.events.append("reset_prefix_cache")

    def generate(self, prompts, sampling_params, use_tqdm):
        assert self.awake == {"weights", "kv_cache"}, self.events
        self.events.append("generate")
        logprobs = [{7: SimpleNamespace(logprob=-0.5, rank=1)}, {8: SimpleNamespace(logprob=-0.25, rank=1)}]
        outputs = [SimpleNamespace(token_ids=[7, 8], logprobs=logprobs)]
        return [SimpleNamespace(prompt_token_ids=p["prompt_token_ids"], outputs=outputs) for p in prompts]


def _colocated_sleeping_vllm(monkeypatch):
    """TRL 1.16's own `VLLMGeneration` (its `generate` and `sync_weights`) around a fake engine, as after init."""
    from trl.distributed import DistributedBackend
    from trl.generation import vllm_generation

    monkeypatch.setattr(vllm_generation, "SamplingParams", lambda **kwargs: kwargs, raising=False)
    vllm = object.__new__(vllm_generation.VLLMGeneration)
    vllm.__dict__.update(
        mode="colocate",
        enable_sleep_mode=True,
        _llm_weights_sleeping=True,
        llm=FakeLLM(),
        model=torch.nn.Linear(2, 2),
        _dist=DistributedBackend(SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=None))),
        accelerator=None,
        tensor_parallel_size=1,
        structured_outputs_regex=None,
        generation_kwargs={},
        logprobs=0,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        min_p=None,
        repetition_penalty=1.0,
        max_completion_length=512,
    )
    return vllm


def test_sleeping_vllm_syncs_weights_once_per_rollout_not_per_turn(monkeypatch):
    vllm = _colocated_sleeping_vllm(monkeypatch)
    trainer = SimpleNamespace(args=SimpleNamespace(use_vllm=True, vllm_mode="colocate"), vllm_generation=vllm)
    loads_per_sync = 2  # nn.Linear: weight, bias
    vllm.sync_weights()  # GRPOTrainer syncs before calling rollout_func on a new step
    with make_generator(trainer) as generator:
        for _ in range(3):  # three turns
            out = generator.generate([[1, 2], [3]], max_new_tokens=7)
            assert [o.ids for o in out] == [[7, 8], [7, 8]] and out[0].logprobs == [-0.5, -0.25]
            assert vllm.max_completion_length == 512
    events = vllm.llm.events
    assert events.count("load") == loads_per_sync and events.count("generate") == 3
    assert events[-1] == "sleep:2" and events.count("sleep:2") == 1 and vllm._llm_weights_sleeping
    assert vllm.enable_sleep_mode is True
    # a second rollout in the same step (the trainer does not sync again): the generator syncs, once
    vllm.llm.events.clear()
    with make_generator(trainer) as generator:
        for _ in range(2):
            generator.generate([[1]], max_new_tokens=3)
    assert vllm.llm.events.count("load") == loads_per_sync and vllm.llm.events[-1] == "sleep:2"


def test_vllm_without_sleep_mode_is_left_to_trl(monkeypatch):
    vllm = _colocated_sleeping_vllm(monkeypatch)
    vllm.enable_sleep_mode, vllm._llm_weights_sleeping = False, False
    vllm.llm.awake = {"weights", "kv_cache"}
    with VLLMGenerator(SimpleNamespace(args=SimpleNamespace(vllm_mode="colocate"), vllm_generation=vllm)) as generator:
        generator.generate([[1, 2]], max_new_tokens=3)
        generator.generate([[1, 2, 3]], max_new_tokens=3)
    assert vllm.llm.events == ["generate", "generate"]


def test_generation_benchmark_compares_both_modes_on_the_same_tokens(tmp_path):
    import importlib.util
    import json
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "generation.py"
    spec = importlib.util.spec_from_file_location("generation_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up
    spec.loader.exec_module(bench)
    settings = bench.Settings(turns=3, batch=2, prompt_tokens=20, turn_tokens=4, env_tokens=5, repeats=2)
    report = bench.run_benchmark(settings, tmp_path / "bench.json")
    assert json.loads((tmp_path / "bench.json").read_text())["same_tokens"] is True and report["device"]
    full, cached = (report["modes"][m]["prefill_tokens"] for m in ("reprefill", "cached"))
    assert full == [2 * 20, 2 * 29, 2 * 38]  # the whole transcript every turn
    assert cached[0] == full[0] and all(c <= 2 * 6 for c in cached[1:])  # last sampled token + env tokens
    assert len(report["speedup"]) == 3 and all(x > 0 for x in report["speedup"])
    assert "| 3 | 47 |" in bench.format_table(report)


def test_rollout_generates_through_trls_unwrap_for_generation(tiny_model_dir, tokenizer):
    # as TRL's own generation: the wrapped model unwrapped (ZeRO-3 parameters gathered) and gradient checkpointing
    # off for the whole rollout, restored afterwards
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    accelerator = Accelerator(cpu=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.gradient_checkpointing_enable()
    model.train()
    args = SimpleNamespace(
        use_vllm=False, temperature=1.0, top_p=1.0, top_k=0, min_p=None, repetition_penalty=1.0,
        generation_kwargs=None, cache_implementation=None, ds3_gather_for_generation=True,
        gradient_checkpointing_kwargs=None,
    )  # fmt: skip
    trainer = SimpleNamespace(args=args, processing_class=tokenizer, model=model, model_wrapped=model,
                              accelerator=accelerator)  # fmt: skip
    with make_generator(trainer) as generator:
        assert not generator.model.is_gradient_checkpointing  # turned off while the episodes are generated
        assert len(generator.generate([[5, 6, 7]], max_new_tokens=3)[0].ids) >= 1
    assert model.is_gradient_checkpointing


def test_sharded_generator_with_nothing_to_generate_still_joins_the_others(model, tokenizer):
    # ZeRO-3 / FSDP: a process whose episodes are over must still make the forwards of the others' generate call
    calls, generate = [], model.generate

    def spy(input_ids, synced_gpus=None, **kwargs):  # records the call; one process here, so no real sync
        calls.append((input_ids.shape, synced_gpus))
        return generate(input_ids=input_ids, **kwargs)

    model.generate = spy
    assert HFGenerator(model, tokenizer, temperature=0.0).generate([], max_new_tokens=4) == []
    assert calls == []  # not sharded: nothing to join
    assert HFGenerator(model, tokenizer, temperature=0.0, collective=True).generate([], max_new_tokens=4) == []
    assert calls == [(torch.Size([1, 1]), True)]  # a one-token batch, generated in step with the others and dropped
    HFGenerator(model, tokenizer, temperature=0.0, collective=True).generate(CONTEXTS, max_new_tokens=2)
    assert calls[-1] == (torch.Size([4, 11]), True)


@pytest.mark.parametrize(("kind", "version", "collective"), [
    ("NO", None, False), ("MULTI_CPU", None, False), ("DEEPSPEED", 2, False), ("DEEPSPEED", 3, True),
    ("FSDP", 1, True), ("FSDP", 2, True),
])  # fmt: skip
def test_generator_is_collective_exactly_when_forwards_are(model, tokenizer, kind, version, collective):
    # ZeRO-3 counts even when parameters are gathered for generation: transformers then syncs the ranks itself
    state = SimpleNamespace(
        fsdp_plugin=SimpleNamespace(fsdp_version=version),
        deepspeed_plugin=SimpleNamespace(deepspeed_config={"zero_optimization": {"stage": version}}),
    )
    accelerator = SimpleNamespace(distributed_type=kind, state=state, unwrap_model=lambda m: m)
    args = SimpleNamespace(use_vllm=False, temperature=1.0, top_p=1.0, top_k=0, min_p=None, repetition_penalty=1.0,
                           generation_kwargs=None, cache_implementation=None, gradient_checkpointing=False,
                           gradient_checkpointing_kwargs=None)  # fmt: skip
    trainer = SimpleNamespace(args=args, model=model, processing_class=tokenizer, accelerator=accelerator,
                              is_fsdp_enabled=kind == "FSDP", is_deepspeed_enabled=False)  # fmt: skip
    assert make_generator(trainer).collective is collective


@pytest.mark.slow
def test_fsdp2_ranks_whose_episodes_end_at_different_turns_generate_in_step(tiny_model_dir, tmp_path):
    from pathlib import Path

    from trl_sdar.testing import rank_reports

    worker = Path(__file__).parent / "_fsdp2_generation_worker.py"
    result, ranks = rank_reports(worker, tiny_model_dir, tmp_path / "in_step")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["turns"] for r in ranks] == [[1, 1], [3, 3]]  # the ranks' episodes really end at different turns
    assert ranks[0]["forwards"] == ranks[1]["forwards"]  # every forward of rank 1 was joined by rank 0
    assert all(r["same_tokens"] for r in ranks)  # sharded greedy tokens = the unsharded model's
    unsynced, _ = rank_reports(worker, tiny_model_dir, tmp_path / "unsynced", "--no-sync")
    assert unsynced.returncode != 0  # the worker's data does need the fix


PROMPT_A, PROMPT_B = list(range(30, 70)), list(range(80, 105))  # 40 and 25 tokens


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_first_call_prefills_each_shared_prompt_once_and_samples_the_same_tokens(model, tokenizer, temperature):
    """The episodes of a task share their first prompt: its keys/values are computed once and copied under each."""
    contexts = [PROMPT_A] * 3 + [PROMPT_B + [7]] * 2 + [[5, 6, 7]]  # 3 and 2 episodes of two tasks, a lone row
    outputs, prefilled = {}, {}
    for reuse, share in ((False, False), (True, False), (True, True)):
        generator = HFGenerator(model, tokenizer, temperature=temperature, top_k=0, reuse_cache=reuse,
                                share_prefixes=share)  # fmt: skip
        torch.manual_seed(3)
        with generator:
            outputs[share] = [o.ids for o in generator.generate(contexts, max_new_tokens=6)]
            prefilled[share] = generator.last_prefill_tokens
        if not reuse:
            reference = outputs[share]
    assert outputs[True] == outputs[False] == reference
    width = len(PROMPT_A)
    assert prefilled[False] == len(contexts) * width
    # the two prefixes once (each keeps its last token out), then every row's last column(s) against them
    assert prefilled[True] == (width - 1) + len(PROMPT_B) + len(contexts) * 3


@pytest.mark.parametrize("share", [True, False])
def test_rollout_generator_shares_prefixes_as_the_config_says(tiny_model_dir, tmp_path, share):
    from trl_sdar import SDARConfig

    args = SDARConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, generation_share_prefix=share)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trainer = SimpleNamespace(args=args, processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
                              accelerator=SimpleNamespace(unwrap_model=lambda m: m, distributed_type="NO"),
                              model=model, model_wrapped=None)  # fmt: skip
    assert make_generator(trainer).share_prefixes is share


@pytest.mark.slow
def test_fsdp2_generation_never_adds_a_prefix_prefill_only_one_rank_would_make(tiny_model_dir, tmp_path):
    from pathlib import Path

    from trl_sdar.testing import rank_reports

    worker = Path(__file__).parent / "_fsdp2_generation_worker.py"
    result, ranks = rank_reports(worker, tiny_model_dir, tmp_path / "in_step", "--shared-prompts")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["episodes"] for r in ranks] == [2, 1]
    # unsharded, rank 0's two episodes share their first prompt and prefill it once; rank 1 has nothing to share
    assert [r["first_call_shared"]["unsharded"] for r in ranks] == [True, False]
    assert [r["first_call_shared"]["sharded"] for r in ranks] == [False, False]  # collective: no extra forward
    assert ranks[0]["forwards"] == ranks[1]["forwards"]
    assert all(r["same_tokens"] for r in ranks)  # sharded, unshared prefill = unsharded, shared prefill
    forced, _ = rank_reports(worker, tiny_model_dir, tmp_path / "forced", "--shared-prompts", "--force-share")
    assert forced.returncode != 0  # the data does need the guard: rank 0's extra prefill forward is never joined
