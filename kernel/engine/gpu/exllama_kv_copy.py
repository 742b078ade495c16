"""Copy one sequence's K/V between the paged cache (GPU) and host bytes (a shared-memory snapshot), both ways.

Byte layout of a snapshot, fp16 like the cache: for each layer, K then V, each [n_tokens, kv_heads, head_dim]. The
sequence's rows are scattered over cache pages, so each layer's rows are gathered on the device (index_select by flat
slot), sent through a pinned staging buffer (a DMA-able host page, so the device copy runs at full PCIe speed), then
memcpy'd into the caller's memory; loading runs the same path backwards with index_copy_. The staging buffer holds a
bounded number of tokens of one layer, so long sequences go through in pieces.
"""

from __future__ import annotations

import numpy as np
import torch

_STAGING_TOKENS = 4096


class KVCopier:
    def __init__(self, kv_tensors: list[tuple[torch.Tensor, torch.Tensor]]):
        # kv_tensors: per layer (K, V), each [cache rows, kv_heads, head_dim], on the layer's device
        self._kv = kv_tensors
        k0 = kv_tensors[0][0]
        self._row_shape = tuple(k0.shape[1:])  # (kv_heads, head_dim)
        self._dtype = k0.dtype
        self._row_bytes = k0[0].numel() * k0.element_size()  # one token of K (or V) in one layer
        self._staging = torch.empty(_STAGING_TOKENS * self._row_bytes, dtype=torch.uint8, pin_memory=k0.is_cuda)
        self._staging_bytes = self._staging.numpy()

    def nbytes(self, n_tokens: int) -> int:
        return len(self._kv) * 2 * n_tokens * self._row_bytes

    # ExLlamaV2 allocates its cache inside torch.inference_mode (model.load_autosplit), and such tensors take in-place
    # writes only inside it.
    @torch.inference_mode()
    def save(self, slots: list[int], dst: memoryview) -> None:
        """Write the K/V of cache rows `slots` (one per token, in order) into dst[:nbytes(len(slots))]."""
        out = np.frombuffer(dst, dtype=np.uint8, count=self.nbytes(len(slots)))
        for cache, index, offset, n in self._pieces(slots, len(slots)):
            self._stage(n).copy_(cache.index_select(0, index))  # device → pinned host
            out[offset : offset + n * self._row_bytes] = self._staging_bytes[: n * self._row_bytes]

    @torch.inference_mode()
    def load(self, slots: list[int], src: memoryview, snapshot_tokens: int) -> None:
        """Read the first len(slots) tokens of what save() wrote for snapshot_tokens tokens from src back into cache
        rows `slots`. A snapshot may hold more tokens than are loaded: its token stride is still snapshot_tokens."""
        data = np.frombuffer(src, dtype=np.uint8, count=self.nbytes(snapshot_tokens))
        for cache, index, offset, n in self._pieces(slots, snapshot_tokens):
            self._staging_bytes[: n * self._row_bytes] = data[offset : offset + n * self._row_bytes]
            cache.index_copy_(0, index, self._stage(n).to(cache.device))  # pinned host → device

    def _stage(self, n: int) -> torch.Tensor:
        """The staging buffer as n cache rows: [n, kv_heads, head_dim]."""
        return self._staging[: n * self._row_bytes].view(self._dtype).view(n, *self._row_shape)

    def _pieces(self, slots: list[int], snapshot_tokens: int):
        """(cache tensor, its slot indices for this piece, byte offset in the snapshot, token count) for every piece
        of at most _STAGING_TOKENS tokens of every K and V block, in snapshot order. The snapshot holds
        snapshot_tokens >= len(slots) tokens per block; the slots are its first ones."""
        n_tokens = len(slots)
        block_bytes = snapshot_tokens * self._row_bytes
        on_device: dict[torch.device, torch.Tensor] = {}
        for layer, pair in enumerate(self._kv):
            for kv, cache in enumerate(pair):
                if cache.device not in on_device:
                    on_device[cache.device] = torch.tensor(slots, dtype=torch.long, device=cache.device)
                index = on_device[cache.device]
                block = (2 * layer + kv) * block_bytes
                for start in range(0, n_tokens, _STAGING_TOKENS):
                    n = min(_STAGING_TOKENS, n_tokens - start)
                    yield cache, index[start : start + n], block + start * self._row_bytes, n
