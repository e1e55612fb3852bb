import pytest
import torch

from trl_sdar.method.teacher import EMA_ADAPTER, ContextTokenizer, Teacher, build_teacher_prompts

PAD = 0


def _left_padded(rows):
    width = max(len(r) for r in rows)
    ids = torch.tensor([[PAD] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def _row(prompts, i):
    return prompts.ids[i][prompts.mask[i].bool()].tolist()


def test_context_is_prepended_to_the_exact_student_prompt_ids():
    ids, mask = _left_padded([[11, 12, 13], [21]])
    prompts = build_teacher_prompts(ids, mask, [[7, 8], None], pad_token_id=PAD)
    assert _row(prompts, 0) == [7, 8, 11, 12, 13]
    assert _row(prompts, 1) == [21]  # no context: the student prompt, and no distillation for the row
    assert prompts.has_teacher.tolist() == [True, False]
    assert prompts.context_tokens.tolist() == [2, 0]
    assert prompts.ids.shape == (2, 5) and prompts.mask[1].tolist() == [0, 0, 0, 0, 1]  # left padding


def test_over_limit_trims_oldest_prompt_tokens_and_keeps_context_whole():
    ids, mask = _left_padded([[11, 12, 13, 14], [21, 22]])
    prompts = build_teacher_prompts(ids, mask, [[7, 8, 9], [7, 8, 9]], pad_token_id=PAD, max_length=5)
    assert _row(prompts, 0) == [7, 8, 9, 13, 14]  # 11, 12 (oldest) dropped, context intact
    assert _row(prompts, 1) == [7, 8, 9, 21, 22]  # fits exactly
    assert prompts.truncated.tolist() == [True, False]
    assert prompts.has_teacher.tolist() == [True, True]


def test_context_that_cannot_fit_drops_the_row_never_cuts_the_context():
    ids, mask = _left_padded([[11, 12]])
    prompts = build_teacher_prompts(ids, mask, [[1, 2, 3, 4, 5]], pad_token_id=PAD, max_length=5)
    assert prompts.has_teacher.tolist() == [False]
    assert _row(prompts, 0) == [11, 12]
    assert prompts.context_tokens.tolist() == [5]


def test_bos_stays_first():
    ids, mask = _left_padded([[1, 11, 12, 13]])
    prompts = build_teacher_prompts(ids, mask, [[7, 8]], pad_token_id=PAD, bos_token_id=1)
    assert _row(prompts, 0) == [1, 7, 8, 11, 12, 13]
    trimmed = build_teacher_prompts(ids, mask, [[7, 8]], pad_token_id=PAD, bos_token_id=1, max_length=4)
    assert _row(trimmed, 0) == [1, 7, 8, 13]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_context_tokenizer_prefix_system_and_messages(tokenizer):
    prefix = ContextTokenizer(tokenizer, placement="prefix", header="[H]\n")
    ids = prefix("use the sink")
    assert tokenizer.decode(ids) == "[H]\nuse the sink\n\n"
    assert prefix("") is None and prefix(None) is None and prefix([]) is None
    system = ContextTokenizer(tokenizer, placement="system", header="[H]\n")
    assert tokenizer.decode(system("use the sink")) == "<|im_start|>system\n[H]\nuse the sink<|im_end|>\n"
    msgs = [{"role": "system", "content": "skills"}]
    assert tokenizer.decode(prefix(msgs)) == "<|im_start|>system\nskills<|im_end|>\n"
    with pytest.raises(ValueError, match="string or a list of chat messages"):
        prefix(42)


@pytest.fixture()
def peft_model(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    return get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))


def _args(kind):
    from trl_sdar import SDARConfig

    return SDARConfig(output_dir="unused", use_cpu=True, bf16=False, report_to="none", teacher_model_kind=kind)


def _flags(model):
    return {n: p.requires_grad for n, p in model.named_parameters()}


def test_ema_teacher_adapter_starts_equal_frozen_and_scoring_restores_state(peft_model):
    teacher = Teacher(peft_model, _args("ema"))
    params = dict(peft_model.named_parameters())
    teacher_names = [n for n in params if f".{EMA_ADAPTER}." in n]
    assert teacher_names and all(not params[n].requires_grad for n in teacher_names)
    for n in teacher_names:
        assert torch.equal(params[n], params[n.replace(f".{EMA_ADAPTER}.", ".default.")])
    before = _flags(peft_model)
    peft_model.train()
    with pytest.raises(RuntimeError, match="boom"):
        with teacher.scoring(peft_model):
            assert peft_model.active_adapter == EMA_ADAPTER
            raise RuntimeError("boom")
    assert peft_model.active_adapter == "default" and _flags(peft_model) == before and peft_model.training


def test_ema_update_moves_teacher_towards_student(peft_model):
    teacher = Teacher(peft_model, _args("ema"))
    student, ema = teacher._adapter_pairs()[1]
    start = ema.detach().clone()
    with torch.no_grad():
        student.add_(1.0)
    teacher.ema_update()
    assert torch.allclose(ema, 0.95 * start + 0.05 * student.detach())


def test_base_teacher_disables_adapters_and_restores(peft_model, tiny_model_dir):
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.fill_(0.5)  # make the adapter matter
    teacher = Teacher(peft_model, _args("base"))
    x = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        adapted = peft_model(input_ids=x).logits
        with teacher.scoring(peft_model) as m:
            base = m(input_ids=x).logits
        after = peft_model(input_ids=x).logits
    assert not torch.allclose(adapted, base) and torch.equal(adapted, after)
    assert teacher.teacher_params() == []  # shares the base model: no extra memory


def test_non_peft_base_teacher_is_a_frozen_copy(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    teacher = Teacher(model, _args("base"))
    assert teacher.copy is not model and all(not p.requires_grad for p in teacher.teacher_params())
    live = Teacher(model, _args("live"))
    assert live.copy is None and live.teacher_params() == []


def test_prompt_bos_only_for_tokenizers_that_prepend_it(tokenizer):
    from trl_sdar.method.teacher import prompt_bos_token_id

    assert prompt_bos_token_id(tokenizer) is None  # the tiny Qwen2 tokenizer has no BOS

    class Prepends:
        bos_token_id = 1

        def __call__(self, text):
            return {"input_ids": [1, 5]}

    class DeclaresOnly(Prepends):
        def __call__(self, text):
            return {"input_ids": [5]}

    assert prompt_bos_token_id(Prepends()) == 1 and prompt_bos_token_id(DeclaresOnly()) is None


def test_ema_teacher_covers_lora_embedding_adapters(tiny_model_dir):
    # `lora_embedding_A.default` has no trailing ".": a substring match on ".default." missed it (the EMA teacher
    # then kept the student's embedding adapter at its initial value forever).
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=4, target_modules=["embed_tokens", "q_proj"], lora_dropout=0.0, init_lora_weights=False)
    model = get_peft_model(model, config)
    teacher = Teacher(model, _args("ema"))
    names = {n for n, p in model.named_parameters() for q in teacher.teacher_params() if p is q}
    assert "base_model.model.model.embed_tokens.lora_embedding_A.teacher" in names
    params = dict(model.named_parameters())
    student = params["base_model.model.model.embed_tokens.lora_embedding_B.default"]
    ema = params["base_model.model.model.embed_tokens.lora_embedding_B.teacher"]
    assert not ema.requires_grad and torch.equal(ema, student)
    start = ema.detach().clone()
    with torch.no_grad():
        student.add_(1.0)
    teacher.ema_update()
    assert torch.allclose(ema, 0.95 * start + 0.05 * student.detach())


def _bos_tokenizer(tiny_model_dir):
    """The tiny tokenizer with a Llama-3-style template: `{{ bos_token }}` once, then the messages."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.add_special_tokens({"bos_token": "<|begin_of_text|>"})
    tok.chat_template = "{{ bos_token }}" + tok.chat_template
    return tok


def test_chat_template_context_does_not_add_a_second_bos(tiny_model_dir):
    tok = _bos_tokenizer(tiny_model_dir)
    bos = tok.bos_token_id
    from trl_sdar.method.teacher import prompt_bos_token_id

    assert prompt_bos_token_id(tok) == bos  # the template opens with BOS even though tokenizer("a") does not
    chat = [{"role": "user", "content": "go"}]
    student = list(tok.apply_chat_template(chat, add_generation_prompt=True)["input_ids"])
    assert student[0] == bos
    for placement, context in (("system", "use the sink"), ("prefix", [{"role": "system", "content": "skills"}])):
        ids = ContextTokenizer(tok, placement=placement, header="")(context)
        assert ids[0] == bos  # the rendered context carries its own BOS
        ids_t, mask_t = _left_padded([student])
        prompts = build_teacher_prompts(ids_t, mask_t, [ids], pad_token_id=tok.pad_token_id, bos_token_id=bos)
        row = _row(prompts, 0)
        assert row.count(bos) == 1 and row[0] == bos
        assert row == [bos] + ids[1:] + student[1:]
        # the limit counts the single BOS: context (without its BOS) + the whole student prompt fits exactly
        exact = build_teacher_prompts(ids_t, mask_t, [ids], pad_token_id=tok.pad_token_id, bos_token_id=bos,
                                      max_length=len(row))  # fmt: skip
        assert _row(exact, 0) == row and not exact.truncated.any()


def test_smollm2_style_role_marker_bos_is_not_a_prompt_bos(tokenizer):
    # A "bos" that opens every message (SmolLM2's <|im_start|>) is a role marker: never stripped, never pinned.
    from trl_sdar.method.teacher import prompt_bos_token_id

    class RoleMarkerBos:
        bos_token_id = tokenizer.convert_tokens_to_ids("<|im_start|>")

        def __call__(self, text):
            return tokenizer(text)

        def apply_chat_template(self, messages, **kwargs):
            return tokenizer.apply_chat_template(messages, **kwargs)

    assert prompt_bos_token_id(RoleMarkerBos()) is None


def _peft_calls_in_teacher() -> list[tuple[str, list[str], int]]:
    """(method, keyword names, positional count) of every `….model.<PeftModel method>(…)` call in teacher.py."""
    import ast
    import inspect as inspect_

    from peft import PeftModel

    import trl_sdar.method.teacher as teacher_module

    module_attrs = set(dir(torch.nn.Module))
    calls = []
    for node in ast.walk(ast.parse(inspect_.getsource(teacher_module))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            on_model = getattr(owner, "attr", None) == "model" or getattr(owner, "id", None) == "model"
            name = node.func.attr
            if on_model and hasattr(PeftModel, name) and name not in module_attrs:
                calls.append((name, [k.arg for k in node.keywords], len(node.args)))
    return calls


def test_every_peft_call_of_the_teacher_fits_the_installed_peft_and_the_pinned_floor():
    import inspect as inspect_
    import re
    from pathlib import Path

    from packaging.version import Version
    from peft import PeftModel

    from trl_sdar.method.teacher import PEFT_MIN_VERSION

    calls = _peft_calls_in_teacher()
    assert ("set_adapter", ["inference_mode"], 1) in calls and any(c[0] == "add_adapter" for c in calls)
    for name, keywords, n_args in calls:
        signature = inspect_.signature(getattr(PeftModel, name))
        signature.bind(None, *range(n_args), **dict.fromkeys(keywords))  # raises TypeError on drift
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    floor = re.search(r'"peft>=([0-9.]+)', pyproject)
    assert floor, "pyproject.toml must pin a peft floor"
    # 0.18.1's PeftModel.set_adapter(adapter_name) has no inference_mode; 0.19.0 is the first that has it
    assert Version(floor.group(1)) >= Version(PEFT_MIN_VERSION) >= Version("0.19.0")


def test_old_peft_without_inference_mode_fails_with_the_fix(peft_model, monkeypatch):
    from trl_sdar.method.teacher import check_peft_version

    def old_set_adapter(self, adapter_name):  # peft 0.18's signature
        raise AssertionError("not called")

    monkeypatch.setattr(type(peft_model), "set_adapter", old_set_adapter)
    with pytest.raises(ImportError, match=r"peft>=0\.19\.0"):
        check_peft_version(peft_model)


def test_non_peft_base_teacher_reuses_trls_reference_model(tiny_model_dir, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_sdar import SDARConfig, SDARTrainer

    rows = [{"prompt": [{"role": "user", "content": "go"}], "privileged_context": "rinse"}] * 2
    args = SDARConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", num_generations=2,
                      per_device_train_batch_size=2, max_completion_length=4, gradient_checkpointing=False,
                      teacher_model_kind="base", beta=0.04)  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    reward = lambda completions, **k: [0.0] * 2  # noqa: E731
    trainer = SDARTrainer(model, reward, args, Dataset.from_list(rows), processing_class=tokenizer)
    assert trainer.ref_model is not None and trainer.teacher.copy is trainer.ref_model  # no third model in memory


def test_ema_copy_save_load_and_restart_from_policy(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from trl_sdar.method.teacher import TEACHER_EMA_FILE

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    teacher = Teacher(model, _args("ema"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    teacher.ema_update()
    saved = {n: p.detach().clone() for n, p in teacher._ema_named()}
    teacher.save(str(tmp_path), is_main_process=True)
    assert (tmp_path / TEACHER_EMA_FILE).is_file()
    teacher.restart_from_policy()  # an old checkpoint without EMA weights: start again from the resumed policy
    assert all(torch.equal(t, s) for s, t in teacher._copy_pairs())
    assert teacher.load(str(tmp_path)) and all(torch.equal(p, saved[n]) for n, p in teacher._ema_named())
    assert not teacher.load(str(tmp_path / "elsewhere"))  # no file: nothing loaded, nothing changed
    assert not Teacher(model, _args("base")).load(str(tmp_path))  # only the EMA teacher has weights of its own


@pytest.mark.parametrize("kind", ["base", "ema"])
def test_base_and_ema_teachers_score_without_dropout_and_restore_each_mode(tiny_model_dir, kind):
    # Before: the EMA adapter (added after TRL's disable_dropout) kept LoRA dropout 0.5 active in train mode, so two
    # identical teacher scorings differed (0.156 nats measured in a run).
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.5)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.fill_(0.3)  # an adapter that matters, so its dropout would show
    teacher = Teacher(model, _args(kind))
    model.train()
    frozen = next(m for n, m in model.named_modules() if n.endswith("lm_head"))
    frozen.eval()  # a submodule in its own mode: kept as it was
    x = torch.tensor([[3, 4, 5, 6, 7, 8]])
    with torch.no_grad():
        with teacher.scoring(model) as m:
            first = m(input_ids=x).logits
        with teacher.scoring(model) as m:
            second = m(input_ids=x).logits
    assert torch.equal(first, second)
    assert model.training and not frozen.training


def test_live_teacher_scores_in_the_policys_own_mode(peft_model):
    teacher = Teacher(peft_model, _args("live"))
    peft_model.train()
    with teacher.scoring(peft_model) as m:
        assert m is peft_model and m.training  # as TRL computes old log-probs: the trainer's mode, unchanged
    assert peft_model.training
