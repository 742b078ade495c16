"""Next-token choice from logits: greedy, or temperature with top-k / top-p from the request's own generator.

Each row is guarded on its own: a row whose logits hold NaN or +inf (or nothing finite), or whose draw fails, yields a
SamplingError for that sequence instead of raising, so one pathological request never fails the batch it shares.
Temperatures below MIN_TEMPERATURE sample greedily (dividing by them would overflow to inf).
"""
from __future__ import annotations

import torch

from kernel.engine.core.interface import MIN_TEMPERATURE, SamplingParams


class SamplingError(Exception):
    """One sequence's next token could not be chosen. Returned in sample()'s result in place of its token."""


def new_generator(seed: int | None, state: bytes | None) -> torch.Generator:
    """A request's RNG: restored from a snapshot's state, else seeded (a fresh random seed when seed is None)."""
    generator = torch.Generator()
    if state is not None:
        generator.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))
    elif seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    return generator


def generator_state(generator: torch.Generator) -> bytes:
    return generator.get_state().numpy().tobytes()


def sample(logits: torch.Tensor, params: list[SamplingParams],
           generators: list[torch.Generator]) -> list[int | SamplingError]:
    """logits: [S, V] float32, one row per sequence. Greedy rows share one argmax; sampled rows draw one by one so each
    consumes only its own generator (same seed → same output, whatever else is in the batch). A row that cannot be
    sampled gets a SamplingError in its place."""
    # -inf is a legitimate logit (a masked token); NaN and +inf are not, and argmax would happily pick them.
    broken = (torch.isnan(logits) | torch.isposinf(logits)).any(dim=-1) | ~torch.isfinite(logits).any(dim=-1)
    tokens: list[int | SamplingError] = logits.argmax(dim=-1).tolist()
    for row in broken.nonzero().flatten().tolist():
        tokens[row] = SamplingError("the model produced non-finite logits")
    for row, (p, generator) in enumerate(zip(params, generators)):
        if p.temperature >= MIN_TEMPERATURE and not isinstance(tokens[row], SamplingError):
            try:
                tokens[row] = _draw(logits[row] / p.temperature, p.top_k, p.top_p, generator)
            except SamplingError as exc:
                tokens[row] = exc
            except Exception as exc:    # whatever torch raises on this row is this request's failure, not the batch's
                tokens[row] = SamplingError(f"sampling failed: {type(exc).__name__}")
    return tokens


def _draw(scaled: torch.Tensor, top_k: int, top_p: float, generator: torch.Generator) -> int:
    """scaled: [V] logits already divided by the temperature."""
    if 0 < top_k < scaled.numel():
        kth = torch.topk(scaled, top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # Keep the smallest head of the distribution whose mass reaches top_p (the first token always stays).
        outside = sorted_probs.cumsum(0) - sorted_probs >= top_p
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs.masked_fill(outside, 0.0))
    if not bool(torch.isfinite(probs).all()) or not float(probs.sum()) > 0.0:
        raise SamplingError("the sampling distribution is not finite")
    return int(torch.multinomial(probs, 1, generator=generator))
