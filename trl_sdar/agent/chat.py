"""Chat-template token pieces of an episode: a step's prompt, and the environment's reply between two model turns.

Model tokens are never re-tokenised; only the environment's text goes through the tokenizer, cut from the chat
template itself so that the transcript is the one the template renders.
"""

from __future__ import annotations


class ChatTurns:
    """Token ids of prompts and of the environment's reply after a model turn, cut from the chat template itself.

    The reply is what the template puts after an assistant message when a user message follows and the next assistant
    turn opens: `<|im_end|>\\n<|im_start|>user\\n{feedback}<|im_end|>\\n<|im_start|>assistant\\n` for ChatML. Only that
    continuation is rendered, never the history, so templates that re-render earlier turns differently (Qwen3 drops
    their `<think>` blocks) work too; `chat_template_kwargs` (e.g. `enable_thinking: false`) are applied.

    The first token of that continuation is the template's end-of-turn token when the template closes assistant turns
    with one (`<|im_end|>`, Gemma's `<end_of_turn>`, Llama-3's `<|eot_id|>`). When the model's turn already ends with
    it, the reply starts after it; when the model stopped on another stop id (Qwen's `<|endoftext|>`) or ran out of
    tokens, the reply starts with the template's own end-of-turn, so the transcript stays the template's.
    """

    _ASSISTANT, _FEEDBACK = "\x00ASSISTANT\x00", "\x00FEEDBACK\x00"

    def __init__(self, tokenizer, chat_template_kwargs: dict | None = None):
        self.tokenizer = tokenizer
        self.template_kwargs = dict(chat_template_kwargs or {})
        convo = [
            {"role": "user", "content": "U"},
            {"role": "assistant", "content": self._ASSISTANT},
            {"role": "user", "content": self._FEEDBACK},
        ]
        rendered = self._render(convo)
        if self._ASSISTANT not in rendered or self._FEEDBACK not in rendered:
            raise ValueError("The chat template drops message contents; multi-turn rollouts cannot use it.")
        self._tail = rendered[rendered.index(self._ASSISTANT) + len(self._ASSISTANT) :]
        head, _, _ = self._tail.partition(self._FEEDBACK)
        head_ids = self._encode(head)
        # the template's end-of-turn token: the first token after the assistant content, if it is a special token
        first = head_ids[0] if head_ids else None
        special = set(getattr(tokenizer, "all_special_ids", [])) | set(_added_special_ids(tokenizer))
        self.end_of_turn_id: int | None = first if first in special or first == tokenizer.eos_token_id else None

    def _render(self, messages) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **self.template_kwargs
        )

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        return self._encode(self._render(messages))

    def closes_turn(self, ids: list[int]) -> bool:
        """Whether a model turn already ends with the template's end-of-turn token."""
        return bool(ids) and self.end_of_turn_id is not None and ids[-1] == self.end_of_turn_id

    def reply_ids(self, feedback: str, model_ids: list[int]) -> list[int]:
        """Environment tokens after the model turn `model_ids`: the end of that turn (unless the model wrote it), the
        user message with `feedback`, and the next assistant header."""
        ids = self._encode(self._tail.replace(self._FEEDBACK, feedback))
        return ids[1:] if self.closes_turn(model_ids) and ids[:1] == [self.end_of_turn_id] else ids


def _added_special_ids(tokenizer) -> list[int]:
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return [i for i, token in decoder.items() if getattr(token, "special", False)]
