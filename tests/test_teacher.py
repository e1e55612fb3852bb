import pytest
import torch

from trl_sdar.teacher import EMA_ADAPTER, ContextTokenizer, Teacher, build_teacher_prompts

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
    from trl_sdar.teacher import prompt_bos_token_id

    assert prompt_bos_token_id(tokenizer) is None  # the tiny Qwen2 tokenizer has no BOS

    class Prepends:
        bos_token_id = 1

        def __call__(self, text):
            return {"input_ids": [1, 5]}

    class DeclaresOnly(Prepends):
        def __call__(self, text):
            return {"input_ids": [5]}

    assert prompt_bos_token_id(Prepends()) == 1 and prompt_bos_token_id(DeclaresOnly()) is None
