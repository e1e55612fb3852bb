"""What a model has learned of the one-room doors world, read from its probabilities instead of sampled episodes.

A one-room doors episode is one decision: which of the listed doors to open. For every task of a manifest this
scores the three complete answers the warm start writes under the model, on the exact step prompt the agent loop
builds: the expert's turn with each colour in turn ("<think>The best move now is to open {c} door.</think><action>
open {c} door</action>", or with `--expert-reason cue` "<think>The sign shows a moon. The best move now is …"). It
reports:

* `coverage`: the probability mass of those three answers (how much of the policy the template describes);
* `expected_success`: the mean over tasks of P(the right answer), with the three renormalised; this is the success
  rate a T = 1 evaluation estimates, without its sampling error;
* `choice_given_sign`: P(colour | the sign's symbol), averaged over the tasks showing that symbol, and `prior`,
  the same averaged over all tasks;
* `rule_information_nats`: the mutual information between the sign and the chosen colour (0: the sign is ignored;
  ln 3 = 1.10: the choice is a function of the sign). A policy that only shifts its colour preferences raises or
  lowers success on some colours without raising this.

    python benchmarks/doors_policy.py --models outputs/study/doors_smollm2_sft outputs/.../runs/grpo/seed0 \
        --output docs/results/study_doors1_wide_policy.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import machine, write_json  # noqa: E402
from trl.trainer.utils import pad  # noqa: E402

from trl_sdar.agent.chat import ChatTurns  # noqa: E402
from trl_sdar.agent.prompts import StepView, step_prompt  # noqa: E402
from trl_sdar.commands.sft.demos import ExpertGenerator  # noqa: E402
from trl_sdar.envs.base import Task  # noqa: E402
from trl_sdar.envs.doors import COLOURS, EXPERT_REASONS, SYMBOLS, DoorsEnv  # noqa: E402


def answer_texts(env: DoorsEnv, task: Task) -> list[str]:
    """The turn `trl-sdar sft`'s expert writes (`ExpertGenerator.completion_text`) on `task`'s first room, once with
    each colour as the answer; `env` must stand at the start of `task` (just reset on it)."""
    expert = ExpertGenerator(env, tokenizer=None, end_of_turn_id=-1, seed=0)  # completion_text needs neither
    expert.start(task)
    right, turn = env.expert_action().split()[1], expert.completion_text()
    return [turn.replace(f" {right} ", f" {c} ") for c in COLOURS[: env.options]]


def _padded(rows: list[list[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of `rows` padded to one width with TRL's `pad`, on `side` ("left": prompts, "right": answers)."""
    ids = pad([torch.tensor(r) for r in rows], padding_value=pad_id, padding_side=side)
    mask = pad([torch.ones(len(r), dtype=torch.long) for r in rows], padding_value=0, padding_side=side)
    return ids, mask


def answer_logprobs(model, tokenizer, prompts: list[list[int]], answers: list[list[str]], batch_size: int = 48):
    """Summed log-probability (len(prompts), k) of each prompt's k answers, each with its end-of-turn token, at
    temperature 1. The prompts' common leading tokens (system prompt, the world's header) and each prompt
    are encoded once (`shared_prefix_logps`); `model` must carry TRL's fused LM head (`add_fused_lm_head`)."""
    from trl_sdar.method.prefix_scoring import shared_prefix_logps

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [
        tokenizer(a, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for row in answers for a in row
    ]
    prompt_ids, prompt_mask = _padded(
        [p for p, row in zip(prompts, answers, strict=True) for _ in row], pad_id, "left"
    )
    completion_ids, completion_mask = _padded(encoded, pad_id, "right")
    with torch.no_grad():
        logps = shared_prefix_logps(model, prompt_ids, prompt_mask, completion_ids, completion_mask,
                                    batch_size=batch_size)  # fmt: skip
    return logps.sum(-1).view(len(prompts), -1)


def read_policy(model, tokenizer, env: DoorsEnv, task_ids: list[int], batch_size: int = 48) -> dict:
    """The measures of the module docstring for one model over `task_ids` (one-room doors tasks)."""
    if env.rooms != 1:
        raise ValueError(f"rooms={env.rooms} is not valid for this read-out; expected 1 (one decision per episode).")
    turns = ChatTurns(tokenizer)
    colours = COLOURS[: env.options]
    prompts, rooms, answers = [], [], []
    for task_id in task_ids:
        task, first = env.task(task_id), env.reset(task_id)
        answers.append(answer_texts(env, task))
        rooms.append(task.info["rooms"][0])
        view = StepView(task, first)
        prompts.append(turns.prompt_ids([{"role": "user", "content": step_prompt(env.name, env.action_tag, view)}]))
    logps = answer_logprobs(model, tokenizer, prompts, answers, batch_size)
    choice = torch.softmax(logps, -1)  # (tasks, colours): the policy restricted to the three answers
    cues = torch.tensor([room["cue"] for room in rooms])
    right = torch.tensor([colours.index(room["answer"]) for room in rooms])
    return summarise(choice, cues, right, coverage=float(logps.exp().sum(-1).mean()), colours=colours)


def summarise(choice: torch.Tensor, cues: torch.Tensor, right: torch.Tensor, coverage: float, colours) -> dict:
    """The report of one model from its choice probabilities (tasks, options), each task's cue and right option."""
    options = choice.size(1)
    weights = torch.stack([(cues == s).float().mean() for s in range(options)])  # P(sign)
    # P(colour | sign), one row per sign
    matrix = torch.stack([choice[cues == s].mean(0) if (cues == s).any() else torch.zeros(options)
                          for s in range(options)])  # fmt: skip
    prior = (weights[:, None] * matrix).sum(0)
    terms = weights[:, None] * matrix * torch.log(matrix / prior)
    information = float(torch.where(matrix > 0, terms, torch.zeros_like(terms)).sum())
    return {
        "tasks": choice.size(0),
        "coverage": coverage,
        "expected_success": float(choice.gather(1, right[:, None]).mean()),
        "choice_given_sign": {
            SYMBOLS[s]: dict(zip(colours, matrix[s].tolist(), strict=True)) for s in range(options) if weights[s] > 0
        },
        "prior": dict(zip(colours, prior.tolist(), strict=True)),
        "rule_information_nats": information,
    }


def main(argv: list[str] | None = None) -> dict:
    from trl.trainer.utils import add_fused_lm_head

    from trl_sdar.commands.evaluate.policy import load_policy
    from trl_sdar.commands.manifests import load_manifest

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", required=True, help="model folders or LoRA run folders")
    p.add_argument("--manifest", default="doors1_builtin_eval128", help="a one-room doors manifest")
    p.add_argument("--expert-reason", default="plain", choices=EXPERT_REASONS,
                   help="the rationale the warm start was taught (the doors option expert_reason)")  # fmt: skip
    p.add_argument("--output", type=Path, default=None, help="write the JSON report here")
    args = p.parse_args(argv)
    manifest = load_manifest(args.manifest)
    if manifest["env_name"] != "doors":
        raise SystemExit(f"--manifest {args.manifest!r} is a {manifest['env_name']!r} manifest; expected doors")
    env = DoorsEnv(**manifest["env_kwargs"], expert_reason=args.expert_reason)
    report = {
        "manifest": args.manifest,
        "expert_reason": args.expert_reason,
        "machine": machine(),
        "seconds": {},
        "models": {},
    }
    for path in args.models:
        began = time.perf_counter()
        model, tokenizer = load_policy(path, device="cpu")
        add_fused_lm_head(model, temperature=1.0)
        report["models"][path] = result = read_policy(model, tokenizer, env, manifest["task_ids"])
        line = f"expected success {result['expected_success']:.3f}, coverage {result['coverage']:.3f}"
        print(f"{path}: {line}, rule information {result['rule_information_nats']:.3f} nats", flush=True)
        report["seconds"][path] = round(time.perf_counter() - began, 1)
        if args.output:  # after every model, so a long list loses nothing when stopped
            write_json(args.output, report)
    return report


if __name__ == "__main__":
    main()
