"""A step's logits → each sequence's next token: grammar masks on the constrained rows, then sampling.

This is the only place the engines turn logits into tokens; the SequenceTable's bookkeeping receives the integers (or
a SamplingError for a row that could not be sampled) and never sees a tensor. One per engine: its MaskBuilder owns
llguidance's thread pool.
"""

from __future__ import annotations

import torch

from kernel.engine.core.sampler import SamplingError, sample
from kernel.engine.core.sequence import Sequence
from kernel.engine.structured.constraint import MaskBuilder


class TokenChooser:
    def __init__(self):
        self._masks = MaskBuilder()

    def choose(self, seqs: list[Sequence], logits: torch.Tensor) -> list[int | SamplingError]:
        """logits: [len(seqs), vocab] float32, row i for seqs[i] (constrained rows are masked in place)."""
        dead = self._masks.mask_logits(
            logits, [(i, s.constraint) for i, s in enumerate(seqs) if s.constraint is not None]
        )
        tokens = sample(logits, [s.params for s in seqs], [s.generator for s in seqs])
        for row, message in dead.items():
            tokens[row] = SamplingError(message)
        return tokens
