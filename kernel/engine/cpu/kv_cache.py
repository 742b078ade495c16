"""The KV tensors: one preallocated buffer of token slots for all layers, and fast copies of a sequence's KV to and from
a byte buffer (the snapshot layout is contiguous [layers, K/V, tokens, kv heads, head_dim] in the cache's dtype)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch


class SlotRun(NamedTuple):
    """Tokens [token, token + count) of a sequence live in the consecutive cache slots [slot, slot + count)."""

    slot: int
    token: int
    count: int


def slot_runs(block_table: Sequence[int], block_size: int, n_tokens: int) -> list[SlotRun]:
    """The first n_tokens tokens of a sequence as runs of consecutive slots: adjacent blocks merge into one run, so a
    sequence whose blocks were allocated together copies with a handful of slice copies instead of a per-slot gather."""
    runs: list[SlotRun] = []
    for index in range(-(-n_tokens // block_size)):
        slot, token = block_table[index] * block_size, index * block_size
        count = min(block_size, n_tokens - token)
        if runs and runs[-1].slot + runs[-1].count == slot:
            last = runs.pop()
            runs.append(SlotRun(last.slot, last.token, last.count + count))
        else:
            runs.append(SlotRun(slot, token, count))
    return runs


def gather_slots(layer: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """One layer's K and V ([2, slots, Hkv, D]) at slots [*S]: [2, *S, Hkv, D]. An index_select of whole Hkv*D rows,
    several times faster than advanced indexing over the slot dimension."""
    rows = layer.flatten(2).index_select(1, slots.flatten())  # [2, |S|, Hkv D]
    return rows.view(2, *slots.shape, *layer.shape[2:])


class KVCache:
    def __init__(self, n_layers: int, n_slots: int, n_kv_heads: int, head_dim: int, dtype: torch.dtype):
        self.data = torch.zeros(n_layers, 2, n_slots, n_kv_heads, head_dim, dtype=dtype)  # [L, 2, slots, Hkv, D]
        self.bytes_per_token = 2 * n_layers * n_kv_heads * head_dim * self.data.element_size()
        # The same memory as raw bytes, for snapshot copies: numpy copies strided slices faster than torch's copy_ on
        # small runs, and bytes need no numpy counterpart of bfloat16. [L, 2, slots, Hkv, D * itemsize]
        self._bytes = self.data.view(torch.uint8).numpy()

    def layer(self, index: int) -> torch.Tensor:
        """Layer index's K and V for every slot, as a view: [2, slots, Hkv, D]."""
        return self.data[index]

    def gather(self, index: int, slots: torch.Tensor) -> torch.Tensor:
        """Layer index's K and V at slots [*S]: [2, *S, Hkv, D]."""
        return gather_slots(self.data[index], slots)

    def _snapshot_view(self, buffer: memoryview, n_tokens: int) -> np.ndarray:
        """buffer as the bytes of a snapshot of n_tokens tokens: [L, 2, n_tokens, Hkv, D * itemsize]."""
        nbytes = n_tokens * self.bytes_per_token
        if buffer.nbytes < nbytes:
            raise ValueError(f"KV buffer holds {buffer.nbytes} bytes, {nbytes} needed")
        layers, _, _, heads, row = self._bytes.shape
        return np.frombuffer(buffer, dtype=np.uint8, count=nbytes).reshape(layers, 2, n_tokens, heads, row)

    def save(self, runs: list[SlotRun], n_tokens: int, dst: memoryview) -> int:
        """Copy the KV of a sequence's first n_tokens tokens (covered by runs) into dst. Returns the bytes written."""
        snapshot = self._snapshot_view(dst, n_tokens)
        for slot, token, count in runs:
            np.copyto(snapshot[:, :, token : token + count], self._bytes[:, :, slot : slot + count])
        return n_tokens * self.bytes_per_token

    def load(self, runs: list[SlotRun], src: memoryview, snapshot_tokens: int) -> None:
        """Copy the tokens that runs cover from src, a snapshot of snapshot_tokens tokens (possibly more than the runs
        cover: its token stride is still snapshot_tokens), into their slots."""
        snapshot = self._snapshot_view(src, snapshot_tokens)
        for slot, token, count in runs:
            np.copyto(self._bytes[:, :, slot : slot + count], snapshot[:, :, token : token + count])
