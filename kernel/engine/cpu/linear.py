"""Products with a fixed weight matrix, y = x Wᵀ, laid out for the fastest kernel the dtype has on this CPU.

bfloat16 weights are reordered once into oneDNN's blocked layout (what torch.compile's CPU freezing pass does): a decode
step multiplies a few rows by every weight of the model, and the prepacked product streams the weights about 1.4x faster
than F.linear, which hands oneDNN a plain layout each call. It also keeps each row's result independent of how many rows
are multiplied together. float32 and float16 keep F.linear, which is as fast or faster for them, and so does bfloat16
on a CPU without oneDNN's bf16 path (AVX-512 or AVX-NE-CONVERT): there the reorder itself refuses to run.

The weights may be stored in another float dtype than the activations (aiosd --weights bf16 with --dtype float32):
the input is then cast to the weights' dtype for the product and the result cast back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernel.engine.cpu.native import ProductKind


def packing_available() -> bool:
    ops = torch.ops.mkldnn
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(ops, "_reorder_linear_weight")
        and hasattr(ops, "_linear_pointwise")
        and hasattr(ops, "_is_mkldnn_bf16_supported")
        and ops._is_mkldnn_bf16_supported()
    )


class Linear:
    def __init__(self, weight: torch.Tensor):
        """weight: [out, in]."""
        self.out_features, self.in_features = weight.shape
        self.nbytes = weight.numel() * weight.element_size()
        self.dtype = weight.dtype
        self._packed = weight.dtype == torch.bfloat16 and packing_available()
        # Reordered for one-row inputs, the decode case; correct for any number of rows.
        self._weight = torch.ops.mkldnn._reorder_linear_weight(weight, 1) if self._packed else weight

    def native_kind(self) -> tuple[ProductKind, torch.Tensor, torch.Tensor] | None:
        """How native/decode_layers.cpp multiplies by this (F.linear), or None for the prepacked oneDNN product,
        which that loop does not call."""
        return None if self._packed else (ProductKind.FLOAT, self._weight, torch.empty(0))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: [T, in] → [T, out], in x's dtype."""
        if x.dtype != self.dtype:
            return self._product(x.to(self.dtype)).to(x.dtype)
        return self._product(x)

    def _product(self, x: torch.Tensor) -> torch.Tensor:
        if self._packed:
            return torch.ops.mkldnn._linear_pointwise(x, self._weight, None, "none", [], "")
        return F.linear(x, self._weight)
