"""The token embedding table kept quantized: a lookup dequantizes only the rows it reads.

The table (vocabulary × hidden, 49152 × 576 for SmolLM2) is as large as the lm_head, but a step reads one row per
token, so it is kept as integer codes with groupwise scales — a GGUF table as the file's own bytes (GGUFBlocks: the
memory map, any GGUF type; only the pages of rows looked up become resident), or the codes the int8 lm_head uses —
instead of a float copy. Indexing it like a tensor — table[ids] → [len(ids), E] in the model's dtype — is the only
operation the forward pass needs. rounding: the dtype rows pass through first (a float weights mode rounds its weights
to its own dtype, so its lookup gives the values a float table of that dtype would hold).
"""

from __future__ import annotations

import torch

from kernel.engine.loading.gguf_blocks import GGUFBlocks
from kernel.engine.loading.quant_tensor import GroupQuantized


class QuantizedEmbedding:
    def __init__(self, table: GroupQuantized | GGUFBlocks, dtype: torch.dtype, rounding: torch.dtype = torch.float32):
        self.table = table
        self.dtype = dtype
        self.rounding = rounding
        self.shape = table.shape

    def __getitem__(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: [T] long → [T, E] in dtype."""
        rows = self.table.dequantize_rows(ids)  # float32, this step's own tensor
        return rows.to(self.rounding).to(self.dtype)
