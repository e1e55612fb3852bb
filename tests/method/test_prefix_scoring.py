"""Shared-prefix teacher scoring: the grouping (pure) and the KV-reusing pass against TRL's unshared pass (fp32)."""

from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOTrainer
from trl.trainer.utils import add_fused_lm_head

from trl_sdar import SDARConfig, SDARTrainer
from trl_sdar.method.prefix_scoring import (
    PrefixGroup,
    forward_count,
    group_rows_by_prefix,
    nest_groups,
    prefix_sharing_unsupported_reason,
    shared_prefix_logps,
    shared_prefix_scores,
)
from trl_sdar.testing import rank_reports

TOL = 1e-5
PAD = 0
CONTEXT = list(range(100, 140))  # 40 shared "context" tokens


# --------------------------------------------------------------------------------------------------- grouping
def _encoded_tokens(rows, groups):
    return sum(sum(len(rows[i]) for i in g.rows) - max(len(g.rows) - 1, 0) * g.prefix_len for g in groups)


def test_generations_of_one_prompt_share_all_but_their_last_prompt_token():
    a, b = list(range(1, 21)), list(range(21, 39))
    groups = group_rows_by_prefix([a, b, a, b, a])
    assert sorted(groups, key=lambda g: g.rows) == [
        PrefixGroup((0, 2, 4), len(a) - 1),
        PrefixGroup((1, 3), len(b) - 1),
    ]


def test_rows_with_a_long_common_context_and_short_prompts_share_the_context():
    rows = [CONTEXT + [1, 2, 3], CONTEXT + [4, 5], CONTEXT + [1, 2, 3], CONTEXT + [6, 7, 8, 9]]
    assert group_rows_by_prefix(rows) == [PrefixGroup((0, 2, 1, 3), len(CONTEXT))]  # 40 + 3 + 3 + 2 + 4 tokens


def test_short_common_prefixes_and_lone_rows_are_scored_unshared_together():
    rows = [[1, 2, 3, 4], CONTEXT + [5], [1, 2, 3, 9], CONTEXT + [6], [7]]
    groups = group_rows_by_prefix(rows, min_shared=16)
    assert groups == [PrefixGroup((1, 3), len(CONTEXT)), PrefixGroup((0, 2, 4), 0)]
    assert group_rows_by_prefix([[1, 2, 3, 4], [1, 2, 3, 9]], min_shared=2) == [PrefixGroup((0, 1), 3)]


def test_splits_a_context_group_when_whole_prompts_repeat():
    # 2 prompts x 3 generations under one context: sharing each prompt (2 groups) beats sharing the context (1 group)
    p, q = CONTEXT + list(range(1, 31)), CONTEXT + list(range(31, 61))
    rows = [p, p, p, q, q, q]
    groups = group_rows_by_prefix(rows)
    assert sorted(g.rows for g in groups) == [(0, 1, 2), (3, 4, 5)]
    assert _encoded_tokens(rows, groups) == 2 * (len(p) + 2)


def test_groups_under_one_context_encode_the_context_once():
    p, q, lone = CONTEXT + list(range(1, 31)), CONTEXT + list(range(31, 61)), list(range(70, 90))
    prompts = [p, p, q, q, lone]
    groups = group_rows_by_prefix(prompts)
    assert sorted(g.rows for g in groups) == [(0, 1), (2, 3), (4,)]
    families = nest_groups(prompts, groups)
    assert [(root, sorted(g.rows for g in gs)) for root, gs in families] == [(40, [(0, 1), (2, 3)]), (0, [(4,)])]


def test_rejects_an_empty_row():
    with pytest.raises(ValueError, match="at least one prompt token"):
        group_rows_by_prefix([[1, 2], []])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2), st.lists(st.integers(1, 4), min_size=1, max_size=6)), min_size=1, max_size=9)
)
def test_grouping_is_a_valid_partition_that_never_costs_more(spec):
    contexts = [[50] * 20, [50] * 10 + [60] * 10, []]
    rows = [contexts[c] + tail for c, tail in spec]
    groups = group_rows_by_prefix(rows, min_shared=4)
    assert sorted(i for g in groups for i in g.rows) == list(range(len(rows)))
    assert sum(g.prefix_len == 0 for g in groups) <= 1
    for g in groups:
        for i in g.rows:
            assert g.prefix_len < len(rows[i])  # every row keeps a prompt token of its own
            assert rows[i][: g.prefix_len] == rows[g.rows[0]][: g.prefix_len]
        assert g.prefix_len == 0 or (g.prefix_len >= 4 and len(g.rows) >= 2)
    unshared = sum(len(r) for r in rows)
    assert _encoded_tokens(rows, groups) <= unshared
    by_context = {}
    for i, (c, _) in enumerate(spec):
        by_context.setdefault(c, []).append(i)
    naive = [PrefixGroup(tuple(m), len(contexts[c])) for c, m in by_context.items() if c < 2 and len(m) > 1]
    naive_cost = _encoded_tokens(rows, naive) + sum(len(rows[i]) for c, m in by_context.items() for i in m
                                                    if c == 2 or len(m) == 1)  # fmt: skip
    assert _encoded_tokens(rows, groups) <= naive_cost  # at least as good as "share each context"


# --------------------------------------------------------------------------------------------- bare model path
def _left_padded(rows):
    width = max(len(r) for r in rows)
    ids = torch.tensor([[PAD] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def _batch(vocab, seed=0):
    """Teacher prompts (two prompts x generations under one context, two other rows), completions, masks."""
    g = torch.Generator().manual_seed(seed)
    tokens = lambda n: torch.randint(3, vocab, (n,), generator=g).tolist()  # noqa: E731
    context, first, second = tokens(40), tokens(30), tokens(25)
    prompts = [context + first] * 3 + [context + second] * 2 + [tokens(12), context + tokens(5)]
    ids, mask = _left_padded(prompts)
    completion = torch.randint(3, vocab, (len(prompts), 7), generator=g)
    completion_mask = torch.ones_like(completion)
    completion_mask[0, 4:] = 0  # finished early
    completion_mask[4, 1:] = 0
    return ids, mask, completion, completion_mask


def _reference(model, ids, mask, completion, completion_mask, batch_size):
    """TRL's own unshared pass (`GRPOTrainer._get_per_token_logps_and_entropies`)."""
    trainer = SimpleNamespace(accelerator=SimpleNamespace(autocast=nullcontext, is_main_process=True))
    with torch.no_grad():
        logps, _, _ = GRPOTrainer._get_per_token_logps_and_entropies(
            trainer,
            model,
            torch.cat([ids, completion], 1),
            torch.cat([mask, completion_mask], 1),
            completion.size(1),
            batch_size=batch_size,
        )
    return logps


@pytest.fixture(scope="module")
def fused_model(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    add_fused_lm_head(model, temperature=0.7, outputs=("log_probs", "entropy"))
    return model


@pytest.mark.parametrize("batch_size", [1, 2, 7])
def test_matches_trl_unshared_pass(fused_model, batch_size):
    ids, mask, completion, completion_mask = _batch(fused_model.config.vocab_size)
    reference = _reference(fused_model, ids, mask, completion, completion_mask, batch_size)
    with torch.no_grad():
        shared = shared_prefix_logps(fused_model, ids, mask, completion, completion_mask, batch_size=batch_size)
    assert shared.shape == completion.shape
    assert (shared - reference).abs().max().item() <= TOL
    assert torch.all(shared[completion_mask == 0] == 0) and torch.all(shared[completion_mask == 1] < 0)


def test_matches_log_softmax_of_logits_over_temperature(fused_model):
    """Independent of TRL: position t's logits / T predict token t + 1; the first completion token included."""
    ids, mask, completion, completion_mask = _batch(fused_model.config.vocab_size, seed=1)
    with torch.no_grad():
        shared = shared_prefix_logps(fused_model, ids, mask, completion, completion_mask, batch_size=3)
        for row in (0, 3, 5):
            prompt = ids[row][mask[row].bool()]
            full = torch.cat([prompt, completion[row]]).unsqueeze(0)
            logits = fused_model(input_ids=full).logits[0, len(prompt) - 1 : -1] / 0.7  # (C, V)
            expected = logits.log_softmax(-1).gather(1, completion[row].unsqueeze(1)).squeeze(1)
            expected = expected * completion_mask[row]
            assert (shared[row] - expected).abs().max().item() <= TOL, row


def test_micro_batches_are_bounded_and_each_prefix_is_read_once(fused_model):
    ids, mask, completion, completion_mask = _batch(fused_model.config.vocab_size)
    calls = []  # (rows, tokens, scoring call?)

    def record(module, args, kwargs):
        calls.append((*kwargs["input_ids"].shape, kwargs.get("labels") is not None))

    hook = fused_model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            shared_prefix_logps(fused_model, ids, mask, completion, completion_mask, batch_size=2)
    finally:
        hook.remove()
    prompts = [r[m.bool()].tolist() for r, m in zip(ids, mask)]
    families = nest_groups(prompts, group_rows_by_prefix(prompts))
    assert max(root for root, _ in families) >= 39  # the context is encoded once under both prompts
    expected = []
    for root, groups in families:
        expected += [(1, root, False)] if root else []
        expected += [(1, g.prefix_len - root, False) for g in groups if g.prefix_len]
    assert [c for c in calls if not c[2]] == expected  # every prefix (part) read once, at batch 1
    assert all(rows <= 2 for rows, _, _ in calls)
    read = sum(rows * tokens for rows, tokens, _ in calls)
    assert read < 0.5 * (ids.numel() + completion.numel())  # the unshared pass reads B x (padded width + C)


@pytest.mark.parametrize("batch_size", [1, 2, 7])
def test_forward_count_is_the_number_of_calls_and_extra_ones_change_nothing(fused_model, batch_size):
    ids, mask, completion, completion_mask = _batch(fused_model.config.vocab_size)
    prompts = [r[m.bool()].tolist() for r, m in zip(ids, mask)]
    planned = forward_count(nest_groups(prompts, group_rows_by_prefix(prompts)), batch_size)
    calls, asked = [], []
    hook = fused_model.register_forward_pre_hook(lambda module, args: calls.append(1))

    def most_forwards(own):  # another process needs 3 more forwards than this one
        asked.append(own)
        return own + 3

    try:
        with torch.no_grad():
            alone = shared_prefix_logps(fused_model, ids, mask, completion, completion_mask, batch_size=batch_size)
            assert len(calls) == planned
            calls.clear()
            in_step = shared_prefix_logps(fused_model, ids, mask, completion, completion_mask,
                                          batch_size=batch_size, most_forwards=most_forwards)  # fmt: skip
    finally:
        hook.remove()
    assert asked == [planned] and len(calls) == planned + 3
    assert torch.equal(alone, in_step)


@pytest.mark.slow
def test_fsdp2_two_processes_with_different_prefix_groups_stay_in_step(tiny_model_dir, tmp_path):
    # Each rank scores a batch of its own (rank 0 needs more forward calls than rank 1); under FSDP2 every forward is
    # a collective. Without `most_forwards` rank 1 runs out of forwards first and the ranks fall out of step.
    worker = Path(__file__).parent / "_fsdp2_prefix_worker.py"
    result, ranks = rank_reports(worker, tiny_model_dir, tmp_path / "in_step")
    assert result.returncode == 0, result.stderr[-3000:]
    assert ranks[0]["forwards"] == ranks[1]["forwards"] > 1
    assert all(r["max_error"] <= TOL for r in ranks), ranks  # the sharded shared pass = the plain unshared one
    unsynced, _ = rank_reports(worker, tiny_model_dir, tmp_path / "unsynced", "--no-sync")
    assert unsynced.returncode != 0  # the worker's data does need the fix


def test_models_with_sliding_window_or_linear_layers_are_reported(fused_model):
    assert prefix_sharing_unsupported_reason(fused_model) is None
    rope = {"rope_type": "default", "rope_theta": 1e6}
    fake = SimpleNamespace(
        config=SimpleNamespace(layer_types=["full_attention", "sliding_attention"], rope_parameters=rope)
    )
    assert "sliding_attention" in prefix_sharing_unsupported_reason(fake)
    fake = SimpleNamespace(config=SimpleNamespace(sliding_window=4096, use_sliding_window=True, rope_parameters=rope))
    assert "sliding_window=4096" in prefix_sharing_unsupported_reason(fake)


def _absolute_position_model(kind: str, vocab_size: int = 300, fused: bool = True):
    """A tiny GPT-2 or OPT (learned absolute position embeddings), built in code (with TRL's fused head)."""
    from transformers import GPT2Config, GPT2LMHeadModel, OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    if kind == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_positions=256, n_embd=32, n_layer=2, n_head=2))
    else:
        config = OPTConfig(vocab_size=vocab_size, max_position_embeddings=256, hidden_size=32, num_hidden_layers=2,
                           ffn_dim=64, num_attention_heads=2, word_embed_proj_dim=32)  # fmt: skip
        model = OPTForCausalLM(config)
    if fused:
        add_fused_lm_head(model.eval(), temperature=0.7)
    return model


@pytest.mark.parametrize("kind", ["gpt2", "opt"])
def test_models_without_rotary_embeddings_are_reported_because_sharing_shifts_their_scores(kind):
    model = _absolute_position_model(kind)
    assert "no rotary position embeddings" in prefix_sharing_unsupported_reason(model)
    ids, mask, completion, completion_mask = _batch(model.config.vocab_size)
    reference = _reference(model, ids, mask, completion, completion_mask, 7)
    with torch.no_grad():
        shared = shared_prefix_logps(model, ids, mask, completion, completion_mask, batch_size=7)
    assert (shared - reference).abs().max().item() > 100 * TOL  # why the trainer scores such models unshared


@pytest.mark.parametrize("kind", ["gpt2", "opt"])
def test_trainer_scores_models_without_rotary_embeddings_unshared_with_a_warning(
    kind, tiny_model_dir, tmp_path, caplog
):
    from datasets import Dataset

    vocab = len(AutoTokenizer.from_pretrained(tiny_model_dir))
    model = _absolute_position_model(kind, vocab_size=vocab, fused=False)  # the trainer adds its fused head
    args = SDARConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                      num_generations=2, per_device_train_batch_size=2, max_completion_length=4)  # fmt: skip
    with caplog.at_level("WARNING", logger="trl_sdar.method.trainer"):
        trainer = SDARTrainer(model, lambda completions, **kw: [0.0] * len(completions), args=args,
                              train_dataset=Dataset.from_list([{"prompt": "a", "privileged_context": "b"}] * 2),
                              processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))  # fmt: skip
    assert not trainer._share_teacher_prefix
    warnings = [r.getMessage() for r in caplog.records if "teacher_share_prefix" in r.getMessage()]
    assert len(warnings) == 1 and "no rotary position embeddings" in warnings[0] and "unshared" in warnings[0]


# ------------------------------------------------------------------------------------------ through the trainer
def _trainer(tiny_model_dir, tmp_path, peft, kind):
    from datasets import Dataset
    from peft import LoraConfig

    args = SDARConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        num_generations=2,
        per_device_train_batch_size=4,
        max_completion_length=8,
        gradient_checkpointing=False,
        temperature=0.8,
        teacher_model_kind=kind,
    )
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0) if peft else None
    return SDARTrainer(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        lambda completions, **kw: [0.0] * len(completions),
        args=args,
        train_dataset=Dataset.from_list([{"prompt": "a", "privileged_context": "b"}] * 4),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        peft_config=lora,
    )


def _perturb(trainer, peft):
    """Make student, frozen teacher and EMA teacher all differ, so scoring with the wrong weights would show."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if (".default." in name or ".teacher." in name) if peft else p.dim() == 2:
                p.add_(0.02 * torch.randn(p.shape, generator=g))  # about one init std


@pytest.mark.parametrize("peft", [False, True], ids=["full", "lora"])
def test_trainer_teacher_logps_shared_equal_unshared_for_every_kind(tiny_model_dir, tmp_path, peft):
    results = {}
    for kind in ("live", "base", "ema"):
        trainer = _trainer(tiny_model_dir, tmp_path / kind, peft, kind)
        assert trainer._share_teacher_prefix  # the default
        _perturb(trainer, peft)
        ids, mask, completion, completion_mask = _batch(trainer.model.config.vocab_size, seed=2)
        inputs = {
            "teacher_prompt_ids": ids,
            "teacher_prompt_mask": mask,
            "completion_ids": completion,
            "completion_mask": completion_mask,
            "sdar_row_mask": torch.ones(ids.size(0)),  # every row has a context
        }
        shared = trainer._teacher_logps(inputs, batch_size=2)
        trainer._share_teacher_prefix = False
        unshared = trainer._teacher_logps(inputs, batch_size=2)
        assert (shared - unshared).abs().max().item() <= TOL, kind
        assert not shared.requires_grad
        if peft:
            assert trainer.model.active_adapter == "default"
        results[kind] = shared
    # the three teachers really are different weights (a prefix encoded with the wrong ones would fail above)
    assert (results["live"] - results["base"]).abs().max() > 1e-3
    assert (results["live"] - results["ema"]).abs().max() > 1e-3
    if peft:
        assert (results["base"] - results["ema"]).abs().max() > 1e-3


def test_config_switch_turns_sharing_off_and_is_validated(tiny_model_dir, tmp_path):
    assert SDARConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False).teacher_share_prefix is True
    with pytest.raises(ValueError, match="teacher_share_prefix='yes'"):
        SDARConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, teacher_share_prefix="yes")


# ---------------------------------------------------------------------------------------- the student, with gradient
def test_with_gradient_matches_trl_unshared_pass_in_scores_entropies_and_gradients(tiny_model_dir):
    """`student_share_prefix`: the loss's gradient reaches every weight through the shared keys/values as it does
    through each row's own tokens in TRL's pass."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    add_fused_lm_head(model, temperature=0.7, outputs=("log_probs", "entropy"))
    ids, mask, completion, completion_mask = _batch(model.config.vocab_size, seed=4)
    weights = torch.linspace(-1.0, 1.0, completion.numel()).view_as(completion.float())  # a loss that uses every row
    trainer = SimpleNamespace(accelerator=SimpleNamespace(autocast=nullcontext, is_main_process=True))

    def gradient(logps, entropies):
        model.zero_grad()
        ((logps * weights).sum() + 0.1 * (entropies * completion_mask).sum()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    inputs = (torch.cat([ids, completion], 1), torch.cat([mask, completion_mask], 1), completion.size(1))
    logps, entropies, _ = GRPOTrainer._get_per_token_logps_and_entropies(
        trainer, model, *inputs, batch_size=3, compute_entropy=True
    )
    expected = gradient(logps, entropies)
    shared, shared_entropies = shared_prefix_scores(
        model, ids, mask, completion, completion_mask, batch_size=3, entropies=True
    )
    assert shared.requires_grad and (shared - logps).abs().max().item() <= TOL
    assert (shared_entropies - entropies).abs().max().item() <= TOL
    got = gradient(shared, shared_entropies)
    assert got.keys() == expected.keys() and "model.embed_tokens.weight" in got
    for name, grad in expected.items():
        assert torch.allclose(got[name], grad, atol=1e-5, rtol=1e-4), name
    assert shared_prefix_scores(model, ids, mask, completion, completion_mask, batch_size=3)[1] is None


def _long_prompt_dataset(n=4):
    """Prompts long enough (~40 tokens) to share: the two generations of each prompt share it."""
    from datasets import Dataset

    rows = [{"prompt": [{"role": "user", "content": f"task {i}: " + "rinse the mug in the sink, then " * 6 + "go"}],
             "privileged_context": "skills: the mug is in cabinet 3"} for i in range(n)]  # fmt: skip
    return Dataset.from_list(rows)


def _tokens_read(model):
    """A list that grows by the number of input tokens of every forward of `model` that builds a graph (the student's
    training pass; generation and the teacher run without gradient)."""
    counts = []

    def count(module, args):
        if torch.is_grad_enabled():
            counts.append(args[0].numel())

    model.get_input_embeddings().register_forward_pre_hook(count)
    return counts


@pytest.mark.parametrize("sdar_coef", [0.0, 0.5])
def test_trainer_with_student_sharing_trains_like_the_unshared_pass(tiny_model_dir, tmp_path, sdar_coef):
    """Two steps with `student_share_prefix` on and off end at the same weights; the shared run reads fewer tokens."""
    weights, read = {}, {}
    for share in (False, True):
        args = SDARConfig(
            output_dir=str(tmp_path / str(share)), use_cpu=True, bf16=False, report_to="none", save_strategy="no",
            num_generations=2, per_device_train_batch_size=4, max_completion_length=8, gradient_checkpointing=False,
            learning_rate=1e-2, max_steps=2, seed=7, sdar_coef=sdar_coef, student_share_prefix=share,
        )  # fmt: skip
        trainer = SDARTrainer(
            AutoModelForCausalLM.from_pretrained(tiny_model_dir),
            lambda completions, **kw: [float(len(c[0]["content"]) % 5) for c in completions],
            args=args,
            train_dataset=_long_prompt_dataset(),
            processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
        )
        assert trainer._share_student_prefix is share
        counts = _tokens_read(trainer.model)
        start = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        trainer.train()
        weights[share] = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        read[share] = sum(counts)
    assert any(not torch.equal(weights[True][n], start[n]) for n in start)  # training moved the weights
    for name, value in weights[False].items():
        assert torch.allclose(weights[True][name], value, atol=1e-4), name
    assert read[True] < 0.7 * read[False]  # each prompt encoded once for its two generations


def test_student_sharing_is_validated(tmp_path):
    with pytest.raises(ValueError, match="student_share_prefix='yes'"):
        SDARConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, student_share_prefix="yes")
    with pytest.raises(ValueError, match="student_share_prefix=True needs gradient_checkpointing=False"):
        SDARConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, student_share_prefix=True)
    assert SDARConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False).student_share_prefix is False


@pytest.mark.slow
def test_student_sharing_is_refused_by_every_process_of_a_two_process_run(tiny_model_dir, tmp_path):
    # rank 0's prompts share a prefix and rank 1's do not: shared student passes would make the ranks run different
    # numbers of forwards before one backward, so each rank refuses, naming the field, instead of training
    worker = Path(__file__).parent / "_student_share_2proc_worker.py"
    result, ranks = rank_reports(worker, tiny_model_dir, tmp_path / "refused")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert all("student_share_prefix=True runs on one process only (this run has 2)" in r["error"] for r in ranks)
