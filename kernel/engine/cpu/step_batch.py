"""What one engine step computes: the flattened tokens of every scheduled sequence and where their KV lives.

Rows are laid out single-token chunks (decodes) first, then each longer prefill chunk. Built once per step, read by
every
layer, so per-layer work loops over prefill chunks only, never over decoding sequences.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch


@dataclass(frozen=True)
class ScheduledChunk:
    token_ids: list[int]  # tokens to run now: positions start_pos .. start_pos + len - 1
    start_pos: int  # tokens before this chunk already have KV in the cache
    block_table: list[int]  # the sequence's KV blocks, covering at least start_pos + len tokens
    needs_logits: bool  # the chunk ends the sequence's pending tokens: sample the next one


@dataclass(frozen=True)
class PrefillChunk:
    start: int  # rows [start, end) of the flattened batch
    end: int
    context_slots: torch.Tensor | None  # [n_ctx] slots of the whole context (earlier tokens + chunk); None when the
    # chunk starts the sequence, so it attends causally to itself alone
    mask: torch.Tensor | None  # [end - start, n_ctx] bool, True = may attend (causal, offset by start_pos)


@dataclass(frozen=True)
class StepBatch:
    input_ids: torch.Tensor  # [T] long
    positions: torch.Tensor  # [T] long
    slot_mapping: torch.Tensor  # [T] long: the KV slot each row's K/V is written to
    n_decode: int  # rows [0, n_decode) are single-token chunks
    # rows [0, narrow_rows) multiply on an int product's integer path, the rest on its bfloat16 copy
    # (quant_weights.SplitProduct): the decodes, unless a caller measuring the integer path asks for every row
    narrow_rows: int
    # Each decode's context (its earlier tokens and itself) as the paged cache holds it: its blocks (rows padded with
    # block 0 past its own) and its length.
    decode_block_tables: torch.Tensor  # [n_decode, max blocks] long
    decode_lens: torch.Tensor  # [n_decode] long
    block_size: int
    prefills: tuple[PrefillChunk, ...]
    logit_rows: torch.Tensor  # [S] long: rows whose next-token logits are sampled

    @cached_property
    def decode_contexts(self) -> tuple[tuple[int, int] | torch.Tensor, ...]:
        """Each decode's context for the torch ops (layer_ops.TorchOps): the consecutive slots (start, stop), read in
        place as a view of the cache (blocks allocated together usually are consecutive), else its [n_ctx] slots."""
        offsets = torch.arange(self.block_size)
        contexts = []
        for blocks, n_ctx in zip(self.decode_block_tables, self.decode_lens.tolist()):
            slots = (blocks[:, None] * self.block_size + offsets).flatten()[:n_ctx]
            contexts.append((int(slots[0]), int(slots[-1]) + 1) if bool((slots.diff() == 1).all()) else slots)
        return tuple(contexts)


def build_step_batch(chunks: list[ScheduledChunk], block_size: int) -> tuple[StepBatch, list[int]]:
    """Returns the batch and, for each logit row in order, the index of its chunk in `chunks`."""
    order = sorted(range(len(chunks)), key=lambda i: len(chunks[i].token_ids) > 1)  # stable: decodes first
    decodes = [chunks[i] for i in order if len(chunks[i].token_ids) == 1]
    offsets = torch.arange(block_size)

    def context_slots(chunk: ScheduledChunk) -> torch.Tensor:  # [n_ctx]
        n_ctx = chunk.start_pos + len(chunk.token_ids)
        blocks = torch.tensor(chunk.block_table[: (n_ctx + block_size - 1) // block_size])
        return (blocks[:, None] * block_size + offsets).flatten()[:n_ctx]

    input_ids, positions, slot_pieces, logit_rows, sampled = [], [], [], [], []
    prefills: list[PrefillChunk] = []
    decode_lens = [c.start_pos + 1 for c in decodes]
    width = max((-(-n // block_size) for n in decode_lens), default=0)
    decode_tables = [c.block_table[:width] + [0] * (width - len(c.block_table[:width])) for c in decodes]
    decode_slots: list[int] = []
    row = 0
    for index in order:
        chunk = chunks[index]
        n = len(chunk.token_ids)
        input_ids += chunk.token_ids
        positions += range(chunk.start_pos, chunk.start_pos + n)
        if n == 1:
            pos = chunk.start_pos
            decode_slots.append(chunk.block_table[pos // block_size] * block_size + pos % block_size)
        else:
            slots = context_slots(chunk)
            slot_pieces.append(slots[chunk.start_pos :])
            if chunk.start_pos == 0:
                prefills.append(PrefillChunk(row, row + n, None, None))
            else:
                key_pos = torch.arange(len(slots))
                query_pos = torch.arange(chunk.start_pos, chunk.start_pos + n)
                prefills.append(PrefillChunk(row, row + n, slots, key_pos[None, :] <= query_pos[:, None]))
        row += n
        if chunk.needs_logits:
            logit_rows.append(row - 1)
            sampled.append(index)

    batch = StepBatch(
        input_ids=torch.tensor(input_ids, dtype=torch.long),
        positions=torch.tensor(positions, dtype=torch.long),
        slot_mapping=torch.cat([torch.tensor(decode_slots, dtype=torch.long)] + slot_pieces),
        n_decode=len(decodes),
        narrow_rows=len(decodes),
        decode_block_tables=torch.tensor(decode_tables, dtype=torch.long).view(len(decodes), width),
        decode_lens=torch.tensor(decode_lens, dtype=torch.long),
        block_size=block_size,
        prefills=tuple(prefills),
        logit_rows=torch.tensor(logit_rows, dtype=torch.long),
    )
    return batch, sampled
