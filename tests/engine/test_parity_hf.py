"""Greedy continuations token-identical to Hugging Face transformers on the same GGUF weights (float32)."""
from __future__ import annotations

from pathlib import Path

import torch

from tests.engine.helpers import generate

NEW_TOKENS = 16


def _long_prompt(engine) -> list[int]:
    source = (Path(__file__).parents[2] / "kernel" / "engine" / "cpu" / "torch_engine.py").read_text()
    ids = engine.tokenize("Summarise this code:\n" + source)
    assert len(ids) >= 1000
    return ids[:1000]


def _prompts(engine) -> dict[str, list[int]]:
    chat = lambda text: engine.apply_chat_template([{"role": "user", "content": text}])
    return {
        "capital": chat("What is the capital of France?"),
        "story": chat("Write a short story about a robot who learns to paint."),
        "code": chat("Write a Python function that reverses a linked list."),
        "plain": engine.tokenize("The history of the Roman Empire began"),
        "long": _long_prompt(engine),
    }


def test_greedy_matches_transformers(engine, hf_smollm):
    prompts = _prompts(engine)
    ours = generate(engine, prompts, max_tokens=NEW_TOKENS)   # all five batched together, stopping at EOS
    for name, prompt in prompts.items():
        with torch.inference_mode():
            out = hf_smollm.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False, attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
        assert ours[name].tokens == out[0, len(prompt):].tolist(), name   # EOS included when produced
