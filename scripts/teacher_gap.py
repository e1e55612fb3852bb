"""How much does a privileged context change the model's predictions? The teacher–student gap before any training.

Plays episodes with the model (turn unit, the step prompts RL uses), then scores every sampled token twice: as the
student sees it (the step prompt) and as the SDAR teacher sees it (header + the task's context + the same prompt
ids). Reports the gap Δ = log π(y | context, x) − log π(y | x): its mean over all sampled tokens, over the tokens
the context moves (|Δ| > 0.5: where the choice is made, often inside the rationale, before the action tags repeat
it), over the tokens inside `<action>…</action>`, the gate σ(β·Δ) on each, and each turn's summed gap for turns of
episodes that won and lost. A gap near 0 everywhere means the model ignores the context, and SDAR cannot differ
from GRPO.

    python scripts/teacher_gap.py --model outputs/warm --env doors --skills task --num-tasks 32 \\
        --env-options '{"context": "informative"}' --output gap.json

Writes the JSON report (and prints it).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import torch

MOVED = 0.5  # |gap| above which a token counts as one the context moves (nats)


def action_token_mask(tokenizer, completion_ids: list[int]) -> list[bool]:
    """Per completion token: whether it lies inside the first `<action>…</action>` span of the decoded text."""
    text, ends = "", []
    for i in range(len(completion_ids)):
        text = tokenizer.decode(completion_ids[: i + 1], skip_special_tokens=True)
        ends.append(len(text))
    start, stop = text.find("<action>"), text.find("</action>")
    if start < 0 or stop < 0:
        return [False] * len(completion_ids)
    begin, finish = start + len("<action>"), stop
    starts = [0, *ends[:-1]]
    return [s < finish and e > begin for s, e in zip(starts, ends, strict=True)]


@torch.no_grad()
def completion_logps(model, prompt: list[int], completion: list[int]) -> list[float]:
    """log π(completion_t | prompt, completion_<t) for each completion token."""
    ids = torch.tensor([prompt + completion])
    logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()  # (C, V)
    return torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(completion).unsqueeze(1)).squeeze(1).tolist()


def summary(gaps: list[float], beta: float) -> dict:
    if not gaps:
        return {"tokens": 0}
    gates = [1.0 / (1.0 + math.exp(-beta * g)) for g in gaps]
    return {"tokens": len(gaps), "gap_mean": statistics.fmean(gaps), "gap_median": statistics.median(gaps),
            "gate_mean": statistics.fmean(gates), "gate_active": sum(g > 0.5 for g in gates) / len(gates)}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    from trl_sdar.method.launch_check import refuse_multi_process

    refuse_multi_process("scripts/teacher_gap.py")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--env", required=True)
    parser.add_argument("--env-options", default=None, help="JSON, as a recipe's env_options")
    parser.add_argument("--skills", default="rules", help="rules | all | bm25 | embedding | task")
    parser.add_argument("--num-tasks", type=int, default=32)
    parser.add_argument("--task-start", type=int, default=0)
    parser.add_argument("--generations", type=int, default=2, help="episodes per task")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-turn-tokens", type=int, default=48)
    parser.add_argument("--history-window", type=int, default=2)
    parser.add_argument("--header", default="[Privileged Skill Information]\n")
    parser.add_argument("--beta", type=float, default=5.0, help="the gate's sdar_gate_beta")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)

    from trl_sdar.agent.generation import HFGenerator
    from trl_sdar.agent.rollout import ChatTurns, EnvRollout, RolloutSettings
    from trl_sdar.commands.environments import env_kwargs
    from trl_sdar.commands.evaluate.policy import load_policy
    from trl_sdar.commands.recipe.args import parse_env_options
    from trl_sdar.envs import make_env
    from trl_sdar.method.teacher import ContextTokenizer, build_teacher_prompts, prompt_bos_token_id
    from trl_sdar.models import resolve_model_path
    from trl_sdar.skills.task_context import skills_for

    torch.manual_seed(args.seed)
    options = parse_env_options(args.env_options) or {}
    kwargs = env_kwargs(args.env, max_task_id=args.task_start + args.num_tasks, options=options)
    model, tokenizer = load_policy(resolve_model_path(args.model))
    model.eval()
    settings = RolloutSettings(rollout_unit="turn", max_turn_tokens=args.max_turn_tokens,
                               history_window=args.history_window)  # fmt: skip
    rollout = EnvRollout(lambda: make_env(args.env, **kwargs), skills=skills_for(args.env, args.skills),
                         settings=settings)  # fmt: skip
    task_ids = [t for t in range(args.task_start, args.task_start + args.num_tasks) for _ in range(args.generations)]
    prompts = [row["prompt"] for row in rollout.dataset(task_ids)]
    turns = ChatTurns(tokenizer)
    with HFGenerator(model, tokenizer, temperature=args.temperature) as generator:
        episodes = rollout.run(task_ids, prompts, generator, turns, args.max_turn_tokens)
    rows = rollout.turn_rows(episodes, with_logprobs=False)
    contexts = ContextTokenizer(tokenizer, placement="prefix", header=args.header)
    bos = prompt_bos_token_id(tokenizer)
    every, actions, turn_sums = [], [], {"won": [], "lost": []}
    columns = ("prompt_ids", "completion_ids", "privileged_context", "episode_index")
    for prompt, completion, context, episode in zip(*(rows[c] for c in columns), strict=True):
        context_ids = contexts(context)
        if not context_ids or not completion:
            continue
        ones = torch.ones(1, len(prompt), dtype=torch.long)
        teacher = build_teacher_prompts(torch.tensor([prompt]), ones, [context_ids],
                                        pad_token_id=tokenizer.pad_token_id, bos_token_id=bos)  # fmt: skip
        teacher_prompt = teacher.ids[0][teacher.mask[0].bool()].tolist()
        student = completion_logps(model, prompt, completion)
        taught = completion_logps(model, teacher_prompt, completion)
        gaps = [t - s for t, s in zip(taught, student, strict=True)]
        mask = action_token_mask(tokenizer, completion)
        every += gaps
        actions += [g for g, m in zip(gaps, mask, strict=True) if m]
        turn_sums["won" if episodes[episode].won else "lost"].append(sum(gaps))
    report = {
        "model": args.model, "env": args.env, "env_options": options, "skills": args.skills,
        "episodes": len(episodes), "success": statistics.fmean(e.won for e in episodes),
        "all_tokens": summary(every, args.beta), "action_tokens": summary(actions, args.beta),
        "moved_tokens": {**summary([g for g in every if abs(g) > MOVED], args.beta),
                         "share": sum(abs(g) > MOVED for g in every) / max(len(every), 1)},
        "turn_gap_sum": {k: {"turns": len(v), "mean": statistics.fmean(v) if v else None}
                         for k, v in turn_sums.items()},
    }  # fmt: skip
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
