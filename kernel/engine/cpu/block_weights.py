"""Products with GGUF block-quantized weights as the file stores them (Q8_0, Q4_0, Q4_1), multiplied by native kernels.

BlockLinear(weight) packs a GroupQuantized matrix once into the kernels' layout (native/qgemm.h: the same bytes per
weight as the file, 18 per 32 weights for Q4_0, 20 for Q4_1, 34 for Q8_0; two blocks' nibbles interleaved so that
one 32-byte load unpacks both, the fp16 scales in their own planes) and multiplies it with torch.ops.aios_cpu.qgemm:
the activations are quantized to int8 per block of 32 (llama.cpp's q8_0: d = amax / 127) on the way in, each block's
integer dot product is exact, and the blocks' scales are applied in float32. The same weights serve decode rows
(a bandwidth-bound matrix-vector product) and prompt rows (a blocked product), so no float copy is kept.

Weights in GGUF's formats map exactly (block_format); floats are quantized first: quantize_q8_0 is llama.cpp's Q8_0
reference quantizer, and Q4_1 comes from quant_tensor.quantize_int4 (its scales rounded to fp16 when packed, as
Q4_1 stores them). The instruction set (Isa) is picked by the native code at each call unless a product is built
with one: AVX-512 VNNI, AVX2 or scalar, capped by AIOS_QGEMM_ISA=scalar|avx2|avx512.
"""

from __future__ import annotations

from enum import IntEnum

import torch

from kernel.engine.cpu.native import ProductKind, load
from kernel.engine.loading.quant_tensor import GroupQuantized

BLOCK = 32


class BlockFormat(IntEnum):
    """native/qgemm.h's Format."""

    Q8_0 = 0
    Q4_0 = 1
    Q4_1 = 2


class Isa(IntEnum):
    """native/qgemm.h's Isa: AUTO is the best the CPU has under AIOS_QGEMM_ISA."""

    AUTO = -1
    SCALAR = 0
    AVX2 = 1
    AVX512 = 2


_KINDS = {BlockFormat.Q8_0: ProductKind.Q8_0, BlockFormat.Q4_0: ProductKind.Q4_0, BlockFormat.Q4_1: ProductKind.Q4_1}


def available() -> bool:
    """Whether the native library (and so qgemm) loaded."""
    return load() is not None


def supported_isas() -> list[Isa]:
    """The instruction sets this CPU runs qgemm with."""
    ops = load()
    return [] if ops is None else [isa for isa in (Isa.SCALAR, Isa.AVX2, Isa.AVX512) if ops.qgemm_isa(int(isa)) >= 0]


def block_format(weight: GroupQuantized) -> BlockFormat | None:
    """The GGUF format a GroupQuantized matrix is stored in exactly (codes, scales and offsets), or None."""
    if weight.group != BLOCK or weight.shape[1] % BLOCK:
        return None
    zero_offset = not bool(weight.offset.any())
    if weight.bits == 8 and weight.low == -128 and zero_offset:
        return BlockFormat.Q8_0
    if weight.bits == 4 and weight.low == -8 and zero_offset:
        return BlockFormat.Q4_0
    if weight.bits == 4 and weight.low == 0:
        return BlockFormat.Q4_1
    return None


def quantize_q8_0(w: torch.Tensor) -> GroupQuantized:
    """llama.cpp's Q8_0 reference quantizer (gguf.quants' too): per block of 32, d = amax / 127, q = x / d rounded half
    away from zero, d stored as fp16."""
    n, k = w.shape
    if k % BLOCK:
        raise ValueError(f"input size {k} is not a multiple of {BLOCK}")
    grouped = w.float().reshape(n, k // BLOCK, BLOCK)
    d = grouped.abs().amax(-1) / 127
    inv = torch.where(d > 0, 1 / d, torch.zeros_like(d))
    scaled = grouped * inv[..., None]
    codes = (scaled.sign() * (scaled.abs() + 0.5).floor()).to(torch.int8)
    d = d.to(torch.float16).float()
    return GroupQuantized(codes.reshape(n, k), d, torch.zeros_like(d), BLOCK, 8, -128)


def pack(weight: GroupQuantized) -> tuple[BlockFormat, torch.Tensor, torch.Tensor]:
    """(format, codes uint8 [N, bytes], scales float16 [1 or 2, N, Gp]) in native/qgemm.h's layout; Gp is the row's
    block count rounded up to even, the padding blocks zero."""
    fmt = block_format(weight)
    if fmt is None:
        raise ValueError(
            f"not a GGUF block format: {weight.bits}-bit codes from {weight.low} in groups of {weight.group}"
        )
    n, k = weight.shape
    g = k // BLOCK
    gp = g + g % 2
    pad = gp - g
    planes = [weight.scale] if fmt is not BlockFormat.Q4_1 else [weight.scale, weight.offset]
    scales = torch.stack([torch.nn.functional.pad(p.float(), (0, pad)) for p in planes]).to(torch.float16)
    codes = torch.nn.functional.pad(weight.codes.view(n, g, BLOCK), (0, 0, 0, pad))  # int8 [N, Gp, 32]
    if fmt is BlockFormat.Q8_0:
        packed = codes.reshape(n, gp * BLOCK).view(torch.uint8)
    else:
        q = codes.to(torch.int16) - weight.low  # 0..15
        if pad:
            q[:, g:] = 0
        pairs = q.view(n, gp // 2, 2, BLOCK)
        packed = (pairs[:, :, 0] | (pairs[:, :, 1] << 4)).to(torch.uint8).reshape(n, gp // 2 * BLOCK)
    return fmt, packed.contiguous(), scales.contiguous()


class BlockLinear:
    def __init__(self, weight: GroupQuantized, isa: Isa = Isa.AUTO):
        """weight: [out, in] in a GGUF block format (block_format). Needs the native library (available())."""
        self._ops = load()
        if self._ops is None:
            raise RuntimeError("BlockLinear needs the native CPU ops, which did not build")
        self.out_features, self.in_features = weight.shape
        self.format, self._codes, self._scales = pack(weight)
        self.isa = isa
        self.nbytes = self._codes.numel() + self._scales.numel() * self._scales.element_size()

    def native_kind(self) -> tuple[ProductKind, torch.Tensor, torch.Tensor]:
        """How native/decode_layers.cpp multiplies by this: the packed codes and the scale planes."""
        return _KINDS[self.format], self._codes, self._scales

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: [T, in] → [T, out], in x's dtype."""
        return self._ops.qgemm(x, self._codes, self._scales, int(self.format), int(self.isa))
