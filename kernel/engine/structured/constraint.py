"""One constrained sequence's grammar state, and the masking of a step's logits by the constraints of its rows.

A Constraint wraps an llguidance matcher positioned after the sequence's output tokens. Its state is a function of
those tokens alone, so a sequence re-admitted after preemption (recompute or snapshot) rebuilds it by replaying its
output ids through a fresh matcher: nothing grammar-related travels with a KV snapshot.

Masking costs only constrained rows: mask_logits computes one bitmask per constrained row (llguidance, outside the
GIL; several rows in parallel on llguidance's executor) and overwrites the disallowed logits of those rows with -inf.
Unconstrained rows are neither read nor written, so their tokens are exactly what they would be alone.
"""

from __future__ import annotations

import torch

from kernel.engine.errors import EngineError
from kernel.engine.structured.grammar import GrammarCompiler

_BITS = torch.arange(32, dtype=torch.int32)


class Constraint:
    def __init__(self, matcher):
        self._matcher = matcher

    @classmethod
    def start(cls, compiler: GrammarCompiler, spec: str, output_ids: list[int]) -> Constraint:
        """A constraint for spec, advanced past output_ids (the tokens a resumed sequence already produced)."""
        matcher = compiler.new_matcher(spec)
        if output_ids and not matcher.consume_tokens(list(output_ids)):
            raise EngineError(f"the request's output tokens do not follow its grammar: {matcher.get_error()[:200]}")
        return cls(matcher)

    def advance(self, token: int) -> bool:
        """Accept the sampled token; False if the grammar does not allow it (the matcher is then in error)."""
        return self._matcher.consume_token(token)

    @property
    def complete(self) -> bool:
        """The grammar is satisfied and allows no further token but end-of-sequence: the sequence is done."""
        return self._matcher.is_stopped()

    @property
    def error(self) -> str:
        return self._matcher.get_error()[:200]

    def matcher(self):
        return self._matcher


class MaskBuilder:
    """Applies the constraints of a step's rows to its logits. One per engine: it owns llguidance's thread pool."""

    def __init__(self, threads: int = 2):
        self._threads = threads
        self._executor = None

    def mask_logits(self, logits: torch.Tensor, rows: list[tuple[int, Constraint]]) -> dict[int, str]:
        """Set to -inf, in place, every logit of row r that rows' constraint for r forbids. Returns {row: message} for
        rows whose grammar allows no token at all (a matcher in error): those cannot be sampled."""
        if not rows:
            return {}
        vocab = logits.shape[-1]
        words = (vocab + 31) // 32
        bitmask = torch.full((len(rows), words), -1, dtype=torch.int32)
        row_bytes = words * 4
        if len(rows) == 1:
            rows[0][1].matcher().unsafe_compute_mask_ptr(bitmask.data_ptr(), row_bytes)
        else:
            self._pool().unsafe_compute_mask_ptr(
                [(c.matcher(), i) for i, (_, c) in enumerate(rows)], bitmask.data_ptr(), row_bytes, len(rows)
            )
        # Unpack: bit b of word w allows token 32*w + b (llguidance's layout, little-endian within the word).
        allowed = ((bitmask.unsqueeze(-1) >> _BITS) & 1).view(len(rows), words * 32)[:, :vocab].bool()
        index = torch.tensor([row for row, _ in rows], dtype=torch.long)
        with torch.inference_mode():  # the model's logits are an inference tensor: edit them in that mode
            logits[index] = logits[index].masked_fill(~allowed, float("-inf"))
        empty = (~allowed.any(dim=-1)).nonzero().flatten().tolist()
        return {rows[i][0]: f"the grammar allows no next token ({rows[i][1].error or 'dead end'})" for i in empty}

    def _pool(self):
        if self._executor is None:
            import llguidance

            self._executor = llguidance.LLExecutor(num_threads=self._threads)
        return self._executor
