"""Products y = x Wᵀ with integer weights: torch's packed int4 (groupwise) and int8 (per output row) CPU kernels.

Batch-1 decode reads every weight once per token, so its time follows weight bytes: int4 reads a quarter of bf16's,
int8 half. Both kernels take bfloat16 activations here: on this AVX2 CPU they are 5–15x slower with float32 or float16
inputs (measured: the whole model's matmuls at batch 1, int4 27 ms with bf16 inputs vs 337 ms with fp32), so the
input is cast to bfloat16 for the product and the result back to the caller's dtype.

Int4Linear: w = (q − 8)·scale + zero per group of 32 inputs, q in 0..15 — the convention of
aten._weight_int4pack_mm_for_cpu(x, packed, group, scales_and_zeros[K/group, N, 2]) in torch 2.13, checked by
tests/engine/test_quant_kernels.py. A GroupQuantized matrix with 4-bit codes c in [low, low + 15] maps exactly:
q = c − low, zero = offset + (low + 8)·scale (Q4_1: zero = m + 8d; Q4_0: zero = 0). The scales and zeros are rounded
to bfloat16 because the kernel reads them in the activation dtype: a relative error of at most 2⁻⁹ per group, the
same rounding a bf16 copy of the weights has per element.

Int8Linear: w = q·scale[n], q in −127..127, through aten._weight_int8pack_mm(x, q[N, K], scales[N]).
"""

from __future__ import annotations

import torch

from kernel.engine.cpu.native import ProductKind
from kernel.engine.loading.quant_tensor import INT4_GROUP, GroupQuantized

KERNEL_DTYPE = torch.bfloat16


def _bf16_call(x: torch.Tensor, product) -> torch.Tensor:
    if x.dtype == KERNEL_DTYPE:
        return product(x)
    return product(x.to(KERNEL_DTYPE)).to(x.dtype)


class Int4Linear:
    def __init__(self, weight: GroupQuantized):
        """weight: 4-bit codes in groups of INT4_GROUP along the input dimension, [out, in]."""
        if weight.bits != 4 or weight.group != INT4_GROUP:
            raise ValueError(
                f"Int4Linear needs 4-bit codes in groups of {INT4_GROUP}, got {weight.bits}-bit "
                f"groups of {weight.group}"
            )
        self.out_features, self.in_features = weight.shape
        if self.in_features % INT4_GROUP:
            raise ValueError(f"input size {self.in_features} is not a multiple of {INT4_GROUP}")
        q = weight.codes.to(torch.int32) - weight.low  # 0..15
        zero = weight.offset + (weight.low + 8) * weight.scale  # [N, G]
        self._packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.contiguous(), 1)  # [N, K/2] uint8
        self._scales_zeros = torch.stack([weight.scale.t(), zero.t()], dim=-1).to(KERNEL_DTYPE).contiguous()
        self.nbytes = self._packed.numel() + self._scales_zeros.numel() * self._scales_zeros.element_size()

    def native_kind(self) -> tuple[ProductKind, torch.Tensor, torch.Tensor]:
        """How native/decode_layers.cpp multiplies by this: the packed codes, scales and zeros."""
        return ProductKind.INT4, self._packed, self._scales_zeros

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: [T, in] → [T, out]."""
        return _bf16_call(
            x, lambda x: torch.ops.aten._weight_int4pack_mm_for_cpu(x, self._packed, INT4_GROUP, self._scales_zeros)
        )


class Int8Linear:
    def __init__(self, weight: GroupQuantized):
        """weight: symmetric 8-bit codes with one scale per row ([out, in] codes, [out, 1] scales, zero offsets)."""
        if weight.bits != 8 or weight.group != weight.shape[1] or bool(weight.offset.any()):
            raise ValueError("Int8Linear needs symmetric 8-bit codes with one scale per row")
        self.out_features, self.in_features = weight.shape
        self.weight = weight  # shares its codes: the tied embedding looks rows up in it
        self._codes = weight.codes.contiguous()  # int8 [N, K]
        self._scales = weight.scale[:, 0].to(KERNEL_DTYPE).contiguous()  # [N]
        self.nbytes = self._codes.numel() + self._scales.numel() * self._scales.element_size()

    def native_kind(self) -> tuple[ProductKind, torch.Tensor, torch.Tensor]:
        """How native/decode_layers.cpp multiplies by this: the codes and row scales."""
        return ProductKind.INT8, self._codes, self._scales

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: [T, in] → [T, out]."""
        return _bf16_call(x, lambda x: torch.ops.aten._weight_int8pack_mm(x, self._codes, self._scales))
