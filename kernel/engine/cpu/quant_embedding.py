"""The token embedding table kept quantized: a lookup dequantizes only the rows it reads.

The table (vocabulary × hidden, 49152 × 576 for SmolLM2) is as large as the lm_head, but a step reads one row per
token, so it is stored as integer codes with groupwise scales (a GGUF Q8_0 table exactly as the file has it, or the
codes the int8 lm_head uses) instead of a float copy. Indexing it like a tensor — table[ids] → [len(ids), E] in the
model's dtype — is the only operation the forward pass needs.
"""

from __future__ import annotations

import torch

from kernel.engine.loading.quant_tensor import GroupQuantized


class QuantizedEmbedding:
    def __init__(self, table: GroupQuantized, dtype: torch.dtype):
        self.table = table
        self.dtype = dtype
        self.shape = table.shape

    def __getitem__(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: [T] long → [T, E] in dtype."""
        return self.table.dequantize_rows(ids).to(self.dtype)
