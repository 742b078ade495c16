"""The KV tensors: one preallocated buffer of token slots for all layers, and fast copies of a sequence's KV to and from
a byte buffer (the snapshot layout is contiguous [layers, K/V, tokens, kv heads, head_dim] in the cache's dtype)."""
from __future__ import annotations

import warnings

import torch


class KVCache:
    def __init__(self, n_layers: int, n_slots: int, n_kv_heads: int, head_dim: int, dtype: torch.dtype):
        self.data = torch.zeros(n_layers, 2, n_slots, n_kv_heads, head_dim, dtype=dtype)   # [L, 2, slots, Hkv, D]
        self.bytes_per_token = 2 * n_layers * n_kv_heads * head_dim * self.data.element_size()

    def write(self, index: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """slots: [T]; k, v: [T, Hkv, D]."""
        self.data[index, 0].index_copy_(0, slots, k)
        self.data[index, 1].index_copy_(0, slots, v)

    def _snapshot_view(self, buffer: memoryview, n_tokens: int) -> torch.Tensor:
        nbytes = n_tokens * self.bytes_per_token
        if buffer.nbytes < nbytes:
            raise ValueError(f"KV buffer holds {buffer.nbytes} bytes, {nbytes} needed")
        _, _, _, heads, dim = self.data.shape
        with warnings.catch_warnings():   # a read-only source is fine: load() only reads it
            warnings.simplefilter("ignore", UserWarning)
            raw = torch.frombuffer(buffer, dtype=torch.uint8, count=nbytes)
        return raw.view(self.data.dtype).view(self.data.shape[0], 2, n_tokens, heads, dim)

    def save(self, slots: torch.Tensor, dst: memoryview) -> int:
        """Gather the KV at slots [n] straight into dst (one copy, no temporary). Returns the bytes written."""
        out = self._snapshot_view(dst, len(slots))
        torch.index_select(self.data, 2, slots, out=out)
        return len(slots) * self.bytes_per_token

    def load(self, slots: torch.Tensor, src: memoryview) -> None:
        """Scatter a snapshot of len(slots) tokens from src into slots."""
        self.data.index_copy_(2, slots, self._snapshot_view(src, len(slots)))
