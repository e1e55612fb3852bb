"""A tiny offline chat model for tests, demos and benchmarks: no hub access, built in ~0.1 s, deterministic.

A byte-level BPE tokenizer trained with Qwen2's own normaliser and split rules (so `AutoTokenizer` reloads it with
the same ids), the agent-protocol tags as non-special added tokens (special ones vanish on decode), pad ≠ eos, a
minimal prefix-preserving ChatML template, and a randomly initialised `Qwen2ForCausalLM` (hidden 64, 2 layers).
"""

from __future__ import annotations

import json
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
PROTOCOL_TAGS = (
    "<think>", "</think>", "<action>", "</action>", "<search>", "</search>",
    "<answer>", "</answer>", "<information>", "</information>",
)  # fmt: skip
_CORPUS = [
    "You are in the middle of a room. Looking quickly around you, you see a cabinet 1, a countertop 1, a fridge 1.",
    "Your task is to: put a clean mug in coffeemachine. go to countertop 1. take mug 1 from countertop 1.",
    "clean mug 1 with sinkbasin 1. heat egg 1 with microwave 1. cool apple 1 with fridge 1. use desklamp 1.",
    "search[long sleeve shirt] click[buy now] click[next >] click[< prev] price lower than 40.00 dollars [SEP]",
    "Which river is longer, the Arvel or the Tessin? Who founded the city of Marrow? The answer is yes or no.",
    "I should think step by step and then act. The quick brown fox jumps over the lazy dog 0123456789.",
    "[Privileged Skill Information] general skills: explore systematically, check receptacles, avoid loops.",
]


def make_tiny_model_dir(path: str | Path, *, vocab_size: int = 600, seed: int = 0) -> Path:
    """Write a tiny Qwen2 chat model + tokenizer folder at `path` (loadable with `from_pretrained`)."""
    import torch
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    path = Path(path)
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    model_json = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model_json["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=model_json["vocab"],
        merges=merges,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tokenizer.add_tokens(list(PROTOCOL_TAGS))  # non-special: kept by decode(skip_special_tokens=True)
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(path)

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    return path
