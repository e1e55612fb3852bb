"""vLLM server mode across processes, on CPU: several ranks play episodes of different lengths through
`EnvRollout.__call__(prompts, trainer)`; the fake vLLM backend does what TRL 1.16's server mode does (gather every
rank's prompts, generate on the main process, broadcast, each rank takes its slice), so a rank that stops calling, or
a batch routed to the wrong rank, shows up as a hang (killed by a timeout) or as wrong tokens.

The worker half of this file runs under torchrun (gloo): `python -m torch.distributed.run --standalone
--nproc_per_node 3 tests/agent/test_multinode.py OUT_DIR MODEL_DIR`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

# TRL 1.16's server mode hands rank r the replies r·n … (r+1)·n − 1 of the gathered batch, n being r's own count, so
# ranks with different numbers of live episodes would get each other's replies (or too few) unless
# trl_sdar.agent.generation.VLLMGenerator pads every rank's contexts to the largest count and drops the fillers.

ROOT = Path(__file__).resolve().parents[2]
WORLD_SIZE = 3
# Targets of the episodes on each rank: an episode ends after `target` turns. Rank 2 is done after turn 1 and
# then holds no live episode; ranks 0 and 1 hold 2 and 1 live episodes at turn 2: uneven batches in every call.
TARGETS = {0: [1, 4], 1: [2, 3], 2: [1, 1]}
MAX_NEW_TOKENS = 24
TIMEOUT_S = 240


def server_reply(context: list[int]) -> str:
    """What the fake vLLM server writes for a context: depends on the context, so a misrouted reply is visible."""
    return f"<think>{len(context)}</think><action>inc</action>"


def server_ids(tokenizer, context: list[int], max_tokens: int) -> list[int]:
    ids = tokenizer(server_reply(context), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return ids[:max_tokens]


def token_logprob(token: int) -> float:
    return -((token % 13) + 1) / 10.0


class FakeServerGeneration:
    """TRL 1.16's `VLLMGeneration.generate` in server mode, with a scripted server in place of the HTTP client."""

    def __init__(self, accelerator, tokenizer, max_completion_length: int):
        self.accelerator, self.tokenizer = accelerator, tokenizer
        self.max_completion_length = max_completion_length
        self.calls: list[int] = []  # contexts this rank sent, per call

    def generate(self, prompts, images, num_generations):
        from accelerate.utils import broadcast_object_list, gather_object

        self.calls.append(len(prompts))
        all_prompts = gather_object(prompts)  # all_gather_object over every rank (gloo here)
        payload = None
        if self.accelerator.is_main_process:
            unique = all_prompts[::num_generations]
            completions = [server_ids(self.tokenizer, p, self.max_completion_length) for p in unique]
            completions = [c for c in completions for _ in range(num_generations)]
            logprobs = [[[token_logprob(t)] for t in c] for c in completions]
            payload = (unique, completions, logprobs, None)
        obj = [payload]
        broadcast_object_list(obj, from_process=0)
        all_prompt_ids, all_completion_ids, all_logprobs, _ = obj[0]
        all_prompt_ids = [ids for ids in all_prompt_ids for _ in range(num_generations)]
        # TRL's slice: every rank is assumed to have sent len(prompts) contexts
        rank_slice = slice(
            self.accelerator.process_index * len(prompts), (self.accelerator.process_index + 1) * len(prompts)
        )
        return all_prompt_ids[rank_slice], all_completion_ids[rank_slice], all_logprobs[rank_slice], None


def _worker(out_dir: Path, model_dir: str) -> None:
    from accelerate import Accelerator
    from transformers import AutoTokenizer

    from trl_sdar.agent.rollout import EnvRollout, RolloutSettings
    from trl_sdar.testing import ScriptedEnv

    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    metrics: dict[str, float] = {}
    trainer = SimpleNamespace(
        processing_class=tokenizer,
        args=SimpleNamespace(use_vllm=True, vllm_mode="server", max_completion_length=4096, temperature=1.0),
        accelerator=accelerator,
        vllm_generation=FakeServerGeneration(accelerator, tokenizer, max_completion_length=4096),
        _log_metric=lambda name, value: metrics.__setitem__(name, value),
    )
    rollout = EnvRollout(ScriptedEnv.counting, settings=RolloutSettings(max_turn_tokens=MAX_NEW_TOKENS, num_workers=2))
    prompts = list(rollout.dataset(TARGETS[rank])["prompt"])
    output = rollout(prompts, trainer)
    accelerator.wait_for_everyone()  # one more collective: every rank left the rollout
    record = {"output": output, "metrics": metrics, "calls": trainer.vllm_generation.calls, "prompts": prompts}
    (out_dir / f"rank{rank}.json").write_text(json.dumps(record))
    accelerator.end_training()  # destroys the process group: a clean exit on every rank


def _run_ranks(out_dir: Path, model_dir: str) -> subprocess.CompletedProcess | None:
    """torchrun the workers; None when they did not finish within the timeout (all of them are killed)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD_SIZE}",
           str(Path(__file__).resolve()), str(out_dir), model_dir]  # fmt: skip
    process = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)  # fmt: skip
    try:
        stdout, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # torchrun and its workers: a hung rank must not outlive the test
        process.communicate()
        return None
    return subprocess.CompletedProcess(cmd, process.returncode, stdout)


def _expected_segments(tokenizer, prompt_ids: list[int], completion: list[int], mask: list[int]) -> list[list[int]]:
    """The model segments (env_mask 1) the fake server must have written, rebuilt from the rows themselves."""
    segments, i = [], 0
    while i < len(completion):
        if mask[i] == 1:
            segments.append(server_ids(tokenizer, prompt_ids + completion[:i], MAX_NEW_TOKENS))
            i += len(segments[-1])
        else:
            i += 1
    return segments


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ranks")
    return out_dir, _run_ranks(out_dir, tiny_model_dir)


@pytest.fixture
def ranks(run):
    """Each rank's record; checked in the test itself, so that a failed run fails (or xfails) the test."""
    out_dir, result = run
    if result is None:
        pytest.fail(f"the ranks did not finish within {TIMEOUT_S} s (a rank hangs in a collective)")
    assert result.returncode == 0, result.stdout[-4000:]
    return {r: json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(WORLD_SIZE)}


def test_every_rank_calls_generate_until_the_longest_episode_anywhere_ends(ranks):
    longest = max(max(t) for t in TARGETS.values())
    live = {r: [sum(t > turn for t in TARGETS[r]) for turn in range(longest)] for r in TARGETS}
    assert live[2][1:] == [0, 0, 0] and live[0][1] != live[1][1]  # the scenario is really uneven
    for r, record in ranks.items():  # lockstep: a rank whose episodes ended keeps joining the gather
        assert len(record["calls"]) == longest, f"rank {r}: {record['calls']}"


def test_every_rank_gets_its_own_completions_and_rows(ranks, tiny_model_dir):
    from transformers import AutoTokenizer

    from trl_sdar.agent.rollout import ChatTurns

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    turns = ChatTurns(tokenizer)
    for r, record in ranks.items():
        out = record["output"]
        assert out["prompt_ids"] == [turns.prompt_ids(p) for p in record["prompts"]], f"rank {r}"
        assert out["turns"] == TARGETS[r] and out["success"] == [1.0] * len(TARGETS[r]), f"rank {r}"
        assert out["env_reward"] == [1.0] * len(TARGETS[r]) and out["env_error"] == [""] * len(TARGETS[r])
        for prompt, completion, mask, logprobs, target in zip(
            out["prompt_ids"], out["completion_ids"], out["env_mask"], out["logprobs"], TARGETS[r], strict=True
        ):
            assert len(completion) == len(mask) == len(logprobs)
            segments = _expected_segments(tokenizer, prompt, completion, mask)
            assert len(segments) == target, f"rank {r}: one model segment per turn"
            model_tokens = [t for t, m in zip(completion, mask, strict=True) if m == 1]
            assert model_tokens == [t for s in segments for t in s], f"rank {r}: a reply was routed to another rank"
            model_logprobs = [lp for lp, m in zip(logprobs, mask, strict=True) if m == 1]
            assert model_logprobs == [token_logprob(t) for t in model_tokens]
            assert all(lp == 0.0 for lp, m in zip(logprobs, mask, strict=True) if m == 0)


def test_every_rank_logs_metrics_of_its_own_episodes(ranks):
    for r, record in ranks.items():
        metrics, targets = record["metrics"], TARGETS[r]
        assert metrics["env/counting/success"] == 1.0 and metrics["env/counting/invalid_rate"] == 0.0
        assert metrics["env/counting/turns"] == pytest.approx(sum(targets) / len(targets)), f"rank {r}"
        per_type = {k: v for k, v in metrics.items() if k.startswith("env/counting/success/")}
        assert per_type == {f"env/counting/success/len{t}": 1.0 for t in targets}, f"rank {r}"


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), sys.argv[2])
