"""Measure the machine's solo service cost (the CostModel behind slowdowns) on a freshly started, idle kernel."""

from __future__ import annotations

import random
import time

from bench.metrics import CostModel
from bench.text import words_text

SHORT_PROMPT, LONG_PROMPT, LONG_OUTPUT = 16, 512, 33
REPEATS = 2


def warm_up(backend) -> None:
    """One short call, so the first agent does not pay the engine's lazy start-up costs."""
    backend.generate(words_text(random.Random("warm-up"), 8), 2)


def calibrate(backend) -> CostModel:
    """Fit overhead + per-prompt-token + per-output-token seconds from three call shapes, each the fastest of a few
    runs. Every prompt is fresh text, so no retained or cached prefix shortens it."""
    rng = random.Random("calibrate")

    def seconds(prompt_tokens: int, max_tokens: int) -> float:
        best = float("inf")
        for _ in range(REPEATS):
            prompt = words_text(rng, prompt_tokens)
            start = time.monotonic()
            backend.generate(prompt, max_tokens)
            best = min(best, time.monotonic() - start)
        return best

    warm_up(backend)
    base = seconds(SHORT_PROMPT, 1)
    prefill = max(0.0, (seconds(LONG_PROMPT, 1) - base) / (LONG_PROMPT - SHORT_PROMPT))
    decode = max(0.0, (seconds(SHORT_PROMPT, LONG_OUTPUT) - base) / (LONG_OUTPUT - 1))
    return CostModel(
        overhead_s=max(0.0, base - SHORT_PROMPT * prefill - decode),
        prefill_s_per_token=prefill,
        decode_s_per_token=decode,
    )
