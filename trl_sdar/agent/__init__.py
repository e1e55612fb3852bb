"""The agent loop: episodes played in environments, turned into training rows.

`rollout.EnvRollout` is the entry point (a TRL `rollout_func`); `prompts` renders what the agent reads, `parsing`
reads what it writes, `chat` cuts chat-template turns, `episode` holds an episode's state, `turn_rows` computes the
turn-row advantages, `generation` samples token ids (the model's `generate` with a KV cache kept across turns, or
TRL's vLLM).
"""
