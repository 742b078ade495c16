"""One request's state inside the engine: its tokens, how many have KV, which blocks hold them, its sampler and text."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from kernel.engine.core.block_pool import ROOT_LINK, PrefixLink
from kernel.engine.core.interface import SamplingParams
from kernel.engine.core.text_stream import TextStream
from kernel.engine.structured.constraint import Constraint


@dataclass(eq=False)
class Sequence:
    req_id: str
    params: SamplingParams
    token_ids: list[int]  # prompt + output; every token but the last sampled one gets KV
    prompt_len: int
    generator: torch.Generator
    stream: TextStream
    admission: int  # order of admission: the youngest is preempted first when blocks run out
    block_table: list[int] = field(default_factory=list)
    num_computed: int = 0  # leading tokens whose K/V are in the cache
    num_registered: int = 0  # leading full blocks registered in the prefix cache
    # Where its registered prefix ends; None once it cannot register more (a hash collision, or caching off).
    prefix_link: PrefixLink | None = ROOT_LINK
    # The grammar state of a constrained request (params.grammar), positioned after its output tokens; None if free.
    constraint: Constraint | None = None

    @property
    def num_output(self) -> int:
        return len(self.token_ids) - self.prompt_len

    @property
    def pending(self) -> int:
        """Tokens still to run through the model before the next sample."""
        return len(self.token_ids) - self.num_computed
