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


def sample(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator]
) -> list[int | SamplingError]:
    """logits: [S, V] float32, one row per sequence. Greedy rows share one argmax; the sampled rows are scaled, cut to
    their top-k / top-p and normalized together (row-wise ops: each row's probabilities are what it would get alone),
    then each draws from its own generator (same seed → same output, whatever else is in the batch). A row that cannot
    be sampled gets a SamplingError in its place."""
    # -inf is a legitimate logit (a masked token); NaN and +inf are not, and argmax would happily pick them. One pass
    # finds both: a row's max is NaN if it holds a NaN (max propagates it), +inf if it holds +inf, -inf if nothing in
    # it is finite, and finite exactly when the row is usable; its index is argmax's (the first maximal value).
    best, argmax = logits.max(dim=-1)
    broken = ~torch.isfinite(best)
    tokens: list[int | SamplingError] = argmax.tolist()
    for row in broken.nonzero().flatten().tolist():
        tokens[row] = SamplingError("the model produced non-finite logits")
    rows = [
        row
        for row, p in enumerate(params)
        if p.temperature >= MIN_TEMPERATURE and not isinstance(tokens[row], SamplingError)
    ]
    if not rows:
        return tokens
    try:
        probs = _distributions(logits[rows], [params[row] for row in rows])
    except Exception as exc:  # whatever torch raises here is these requests' failure, not the batch's
        for row in rows:
            tokens[row] = SamplingError(f"sampling failed: {type(exc).__name__}")
        return tokens
    usable = (torch.isfinite(probs).all(dim=-1) & (probs.sum(dim=-1) > 0)).tolist()
    for i, row in enumerate(rows):
        if not usable[i]:
            tokens[row] = SamplingError("the sampling distribution is not finite")
            continue
        try:
            tokens[row] = int(torch.multinomial(probs[i], 1, generator=generators[row]))
        except Exception as exc:
            tokens[row] = SamplingError(f"sampling failed: {type(exc).__name__}")
    return tokens


def _distributions(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """[R, V] logits of the sampled rows → their (unnormalized) sampling weights: temperature, top-k, softmax, top-p."""
    n_vocab = logits.shape[-1]
    # Times the float32 reciprocal: what torch computes for a tensor divided by a Python scalar, so a row's values
    # are bit for bit those it had when rows were sampled one by one.
    inverse = torch.tensor([p.temperature for p in params], dtype=logits.dtype).reciprocal()
    scaled = logits * inverse[:, None]
    ks = [p.top_k if 0 < p.top_k < n_vocab else 0 for p in params]
    if any(ks):
        # Each row's k-th largest value (rows without top-k: -inf, which masks nothing).
        top = torch.topk(scaled, max(ks), dim=-1).values  # [R, k_max]
        kth = top.gather(1, torch.tensor([max(k, 1) - 1 for k in ks])[:, None])  # [R, 1]
        kth[torch.tensor([k == 0 for k in ks])] = float("-inf")
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    nucleus = [i for i, p in enumerate(params) if p.top_p < 1.0]
    if nucleus:
        # Keep the smallest head of each distribution whose mass reaches its top_p (the first token always stays).
        # Only the rows that ask for it: a top_p of 1.0 must not drop a tail that cumsum rounding puts at >= 1.0.
        index = torch.tensor(nucleus)
        sorted_probs, order = probs[index].sort(dim=-1, descending=True)
        top_p = torch.tensor([params[i].top_p for i in nucleus], dtype=probs.dtype)[:, None]
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
        probs[index] = torch.zeros_like(sorted_probs).scatter_(1, order, sorted_probs.masked_fill(outside, 0.0))
    return probs
