#!/usr/bin/env python
"""Multi-turn generation time against the number of turns: KV cache kept across turns vs re-prefilled every turn.

`HFGenerator` (the rollout's generator without vLLM) plays a batch of episodes turn by turn, as the rollout does:
each turn generates `--turn-tokens` tokens per episode (EOS suppressed by `min_new_tokens`, so both modes do the same
work) from the episode's whole context, then appends `--env-tokens` environment tokens. "reprefill" is the generator
as before this change (`reuse_cache=False`: every turn prefills the whole transcript); "cached" reuses each episode's
keys/values and prefills only the new tokens. Both modes play the same episodes side by side in one process: each
turn is timed in one mode right after the other (alternating which goes first), with the same seed, prompts and
environment tokens; the sampled tokens are compared (they must match). Per-turn times are medians over `--repeats`.
Prints, per number of turns k, the time to generate a k-turn episode batch in each mode and their ratio.

    python benchmarks/generation.py --model smollm2 --turns 10 --batch 2 --prompt-tokens 256 --turn-tokens 16 \
        --env-tokens 32 --output bench_generation.json
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness, when loaded by path (tests)

from harness import flag, machine, ratio, settings_from, settings_parser, timed, turn_order, write_json  # noqa: E402

MODES = ("reprefill", "cached")


@dataclass
class Settings:
    model: str = "tiny"  # tiny | smollm2
    turns: int = 10
    batch: int = 2
    prompt_tokens: int = 256
    turn_tokens: int = 16
    env_tokens: int = 32
    repeats: int = 1
    seed: int = 0


def load_model(name: str):
    """(model, tokenizer) in float32, eval mode: the in-code tiny model or SmolLM2-135M-Instruct."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name == "tiny":
        from trl_sdar.models.tiny import make_tiny_model_dir

        path = make_tiny_model_dir(tempfile.mkdtemp(prefix="tiny-qwen2-"))
    elif name == "smollm2":
        from trl_sdar.models.smollm2 import smollm2_model_dir

        path = smollm2_model_dir()
    else:
        raise ValueError(f"--model must be 'tiny' or 'smollm2', got {name!r}.")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device), AutoTokenizer.from_pretrained(path)


def episode_inputs(settings: Settings, vocab: int, special: set[int]) -> tuple[list[list[int]], list[list[list[int]]]]:
    """Prompts (batch × prompt_tokens) and environment replies (turns × batch × env_tokens): fixed random ids."""
    import random

    rng = random.Random(settings.seed)
    ids = [i for i in range(vocab) if i not in special]
    prompts = [[rng.choice(ids) for _ in range(settings.prompt_tokens)] for _ in range(settings.batch)]
    replies = [
        [[rng.choice(ids) for _ in range(settings.env_tokens)] for _ in range(settings.batch)]
        for _ in range(settings.turns)
    ]
    return prompts, replies


def _rng_state():
    import torch

    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None


def _set_rng_state(state) -> None:
    import torch

    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


def play_side_by_side(generators: dict, settings: Settings, prompts, replies, first: int = 0) -> dict[str, dict]:
    """The same batch of episodes in every mode, turn by turn: turn t is timed in one mode right after the other
    (the order alternating), so that load changes on the machine hit both; each mode has its own RNG stream from the
    same seed, so both sample the same tokens. Per mode: seconds and prefilled tokens per turn, the sampled ids."""
    import torch

    torch.manual_seed(settings.seed)
    rng = {mode: _rng_state() for mode in generators}
    runs = {mode: {"contexts": [list(p) for p in prompts], "turn_s": [], "prefill_tokens": [], "sampled": []}
            for mode in generators}  # fmt: skip
    for turn in range(settings.turns):
        for mode in turn_order(list(generators), turn + first):
            generator, run = generators[mode], runs[mode]
            _set_rng_state(rng[mode])
            outs, seconds = timed(generator.generate, run["contexts"], settings.turn_tokens)
            run["turn_s"].append(seconds)
            rng[mode] = _rng_state()
            run["prefill_tokens"].append(generator.last_prefill_tokens)
            run["sampled"].append([o.ids for o in outs])
            run["contexts"] = [c + o.ids + r for c, o, r in zip(run["contexts"], outs, replies[turn], strict=True)]
    for mode, generator in generators.items():
        generator.close()
        runs[mode]["final_context"] = len(runs[mode].pop("contexts")[0])
    return runs


def device_line() -> str:
    """The report's `device`: the GPU, or the CPU with its cores and torch threads; and torch's version."""
    import torch

    m = machine()
    if torch.cuda.is_available():
        return f"{m['device']}, torch {m['torch']}"
    return f"{m['cpu']}, {os.cpu_count()} cores, {m['torch_threads']} torch threads, torch {m['torch']}"


def run_benchmark(settings: Settings, output: Path | None = None) -> dict:
    from trl_sdar.agent.generation import HFGenerator

    model, tokenizer = load_model(settings.model)
    prompts, replies = episode_inputs(settings, len(tokenizer), set(tokenizer.all_special_ids))
    with HFGenerator(model, tokenizer, reuse_cache=False) as warm_up:  # first-call allocations, untimed
        warm_up.generate(prompts, 2)
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for repeat in range(settings.repeats):
        generators = {
            mode: HFGenerator(
                model,
                tokenizer,
                temperature=1.0,
                generation_kwargs={"min_new_tokens": settings.turn_tokens},  # every turn the same length
                reuse_cache=mode == "cached",
            )
            for mode in MODES
        }
        for mode, run in play_side_by_side(generators, settings, prompts, replies, first=repeat).items():
            runs[mode].append(run)
            print(f"[bench] repeat {repeat} {mode}: {sum(run['turn_s']):.1f} s", file=sys.stderr, flush=True)
    report = {"settings": asdict(settings), "device": device_line(), "modes": {}}
    for mode in MODES:
        per_turn = [statistics.median(r["turn_s"][t] for r in runs[mode]) for t in range(settings.turns)]
        cumulative = [sum(per_turn[: k + 1]) for k in range(settings.turns)]
        report["modes"][mode] = {
            "turn_s": per_turn,
            "episode_s": cumulative,  # k-turn episode batch: the first k turns
            "prefill_tokens": runs[mode][0]["prefill_tokens"],
        }
    reprefill, cached = report["modes"]["reprefill"]["episode_s"], report["modes"]["cached"]["episode_s"]
    report["speedup"] = [ratio(a, b) for a, b in zip(reprefill, cached, strict=True)]
    report["same_tokens"] = all(
        a["sampled"] == b["sampled"] for a, b in zip(runs["reprefill"], runs["cached"], strict=True)
    )
    report["final_context_tokens"] = runs["cached"][0]["final_context"]
    if output is not None:
        write_json(output, report)
    return report


def format_table(report: dict) -> str:
    s = report["settings"]
    lines = [
        f"{report['device']}",
        f"model {s['model']}, batch {s['batch']}, prompt {s['prompt_tokens']}, {s['turn_tokens']} tokens per turn, "
        f"{s['env_tokens']} env tokens per turn, repeats {s['repeats']}; same sampled tokens: {report['same_tokens']}",
        "| turns | context (tokens) | re-prefilled (s) | cached (s) | speed-up |",
        "|---:|---:|---:|---:|---:|",
    ]
    per_turn = s["turn_tokens"] + s["env_tokens"]
    for k, (a, b, x) in enumerate(
        zip(report["modes"]["reprefill"]["episode_s"], report["modes"]["cached"]["episode_s"], report["speedup"]), 1
    ):
        lines.append(f"| {k} | {s['prompt_tokens'] + k * per_turn} | {a:.2f} | {b:.2f} | {x:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from trl_sdar.method.launch_check import refuse_multi_process

    refuse_multi_process("benchmarks/generation.py")
    parser = settings_parser(Settings, __doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--output", type=Path, default=None, help="write the JSON report here")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    settings = settings_from(args, Settings)
    for name in ("turns", "batch", "prompt_tokens", "turn_tokens", "repeats"):
        if getattr(settings, name) < 1:
            parser.error(f"{flag(name)} must be >= 1, got {getattr(settings, name)}")
    print(format_table(run_benchmark(settings, args.output)))


if __name__ == "__main__":
    main()
