"""vLLM weight sync with an EMA teacher and `modules_to_save`: vLLM is sent the policy's module copies only."""

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from trl_sdar import SDARConfig
from trl_sdar.method.teacher import Teacher
from trl_sdar.method.vllm_sync import ema_copies_hidden, sync_policy_only


def _ema_model(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=4, target_modules=["q_proj"], modules_to_save=["lm_head"], lora_dropout=0.0)
    model = get_peft_model(model, config)
    Teacher(model, SDARConfig(output_dir="unused", use_cpu=True, bf16=False, teacher_model_kind="ema"))
    return model


def _base_names(model) -> set[str]:
    """The names vLLM would receive by the published rules of a PEFT sync: base prefix and `.base_layer` removed,
    LoRA weights and original modules skipped, the active adapter's `modules_to_save.default.` removed."""
    names = set()
    for name, _ in model.named_parameters():
        name = name.removeprefix("base_model.model.").replace(".base_layer", "")
        if "lora_" in name or "original_module" in name:
            continue
        names.add(name.replace("modules_to_save.default.", ""))
    return names


def test_sync_sees_only_the_policy_copies_and_the_teacher_gets_them_back(tiny_model_dir):
    model = _ema_model(tiny_model_dir)
    plain = {n for n, _ in AutoModelForCausalLM.from_pretrained(tiny_model_dir).named_parameters()}
    assert "lm_head.modules_to_save.teacher.weight" in _base_names(model)  # what vLLM would have been sent
    teacher_copy = dict(model.named_parameters())["base_model.model.lm_head.modules_to_save.teacher.weight"]
    seen = []

    class FakeGeneration:  # TRL's VLLMGeneration as the trainer holds it: a sync that reads the model's weights
        def sync_weights(self):
            seen.append(_base_names(model))

    generation = FakeGeneration()
    sync_policy_only(generation, model)
    generation.sync_weights()
    assert seen == [plain | {"lm_head.weight"}]  # every name is a base-model name
    after = dict(model.named_parameters())["base_model.model.lm_head.modules_to_save.teacher.weight"]
    assert after is teacher_copy  # back in place, the same tensor


def test_hidden_copies_come_back_after_an_error(tiny_model_dir):
    model = _ema_model(tiny_model_dir)
    before = [n for n, _ in model.named_parameters()]
    try:
        with ema_copies_hidden(model) as taken:
            assert taken == 1 and not any(".teacher." in n and "lora_" not in n for n, _ in model.named_parameters())
            raise RuntimeError("sync failed")
    except RuntimeError:
        pass
    assert [n for n, _ in model.named_parameters()] == before
    assert torch.equal(model.base_model.model.lm_head.modules_to_save["teacher"].weight,
                       model.base_model.model.lm_head.modules_to_save["default"].weight)  # fmt: skip
