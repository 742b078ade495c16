"""Products with GGUF block-quantized weights as the file stores them, multiplied by native kernels (native/qgemm*.cpp).

Formats (BlockFormat): Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (blocks of 32), Q4_K, Q5_K and Q6_K (super-blocks of 256).

The API (what the loader calls):

    BlockLinear(weight: GroupQuantized, isa=Isa.AUTO)
        a GroupQuantized matrix in Q8_0 / Q4_0 / Q4_1 form (block_format), packed once into qgemm.h's layout: the
        same bytes per weight as the file (18 per 32 weights for Q4_0, 20 for Q4_1, 34 for Q8_0; two blocks'
        nibbles interleaved so that one 32-byte load unpacks both, the fp16 scales in their own planes).
        Products with a multiple of 16 rows are grouped (group_rows): the rows interleaved by 16, so that the decode
        kernels hold 16 rows in a vector's lanes (native/qgemm.h; AIOS_QGEMM_GROUPED=0 keeps rows apart, to compare).
    BlockLinear.from_gguf(raw, qtype, shape, isa=Isa.AUTO)
        the tensor's bytes as the GGUF file stores them (numpy or torch uint8, [out, row bytes] or flat; shape =
        (out, in), in torch's order, i.e. GGUF's ne reversed), for any qtype in GGUF_FORMATS. Q5_0, Q5_1, Q4_K,
        Q5_K and Q6_K are multiplied straight from those bytes: no copy is made when raw is a contiguous uint8 array
        (a view of a memory-mapped file stays one; the product holds a reference). Q8_0 / Q4_0 / Q4_1 are repacked as
        above.
    BlockLinear.concat(parts)
        products of one format stacked along the output rows (q, k and v as one product); raises ValueError when the
        formats or input sizes differ.
    product(x) -> y           x [T, in] float32/bfloat16/float16 → [T, out] in x's dtype
    product.native_kind()     (ProductKind, codes, scales) for native/decode_layers.cpp
    product.nbytes            the weight bytes the product reads (for the raw formats: the file's)
    supports(qtype)           whether from_gguf takes a GGUF type

Rows of a raw tensor may be permuted (llama's q/k rotary unpermute) before from_gguf: each row's blocks are
contiguous in GGUF, so a row permutation of the [out, row bytes] array is exact.

Arithmetic: the activations are quantized to int8 per block of 32 (llama.cpp's q8_0: d = amax / 127) on the way in,
each block's (Q6_K: each 16-weight half's) integer dot product is exact, and the scales are applied in float32.
The same weights serve decode rows (a bandwidth-bound matrix-vector product) and prompt rows (a blocked product that
decodes each tile of weight rows once and reuses it across the activation rows), so no float copy is kept.

Floats are quantized first: quantize_q8_0 is llama.cpp's Q8_0 reference quantizer, and Q4_1 comes from
quant_tensor.quantize_int4 (its scales rounded to fp16 when packed, as Q4_1 stores them). The instruction set (Isa)
is picked by the native code at each call unless a product is built with one: AVX-512 VNNI, AVX2 or scalar, capped
by AIOS_QGEMM_ISA=scalar|avx2|avx512.
"""

from __future__ import annotations

import os
from enum import IntEnum

import numpy as np
import torch
from gguf import GGMLQuantizationType

from kernel.engine.cpu.native import ProductKind, load
from kernel.engine.loading.quant_tensor import GroupQuantized, from_q4_0, from_q4_1, from_q8_0

BLOCK = 32


class BlockFormat(IntEnum):
    """native/qgemm.h's Format."""

    Q8_0 = 0
    Q4_0 = 1
    Q4_1 = 2
    Q5_0 = 3  # the raw formats, multiplied from the file's bytes
    Q4_K = 4
    Q6_K = 5
    Q5_K = 6
    Q5_1 = 7


class Isa(IntEnum):
    """native/qgemm.h's Isa: AUTO is the best the CPU has under AIOS_QGEMM_ISA."""

    AUTO = -1
    SCALAR = 0
    AVX2 = 1
    AVX512 = 2


_KINDS = {fmt: ProductKind(ProductKind.Q8_0 + fmt) for fmt in BlockFormat}
GGUF_FORMATS = {
    GGMLQuantizationType.Q8_0: BlockFormat.Q8_0,
    GGMLQuantizationType.Q4_0: BlockFormat.Q4_0,
    GGMLQuantizationType.Q4_1: BlockFormat.Q4_1,
    GGMLQuantizationType.Q5_0: BlockFormat.Q5_0,
    GGMLQuantizationType.Q4_K: BlockFormat.Q4_K,
    GGMLQuantizationType.Q6_K: BlockFormat.Q6_K,
    GGMLQuantizationType.Q5_K: BlockFormat.Q5_K,
    GGMLQuantizationType.Q5_1: BlockFormat.Q5_1,
}
_PACKED_DECODERS = {BlockFormat.Q8_0: from_q8_0, BlockFormat.Q4_0: from_q4_0, BlockFormat.Q4_1: from_q4_1}
# The raw formats: (weights per block, bytes per block), as GGUF stores them
RAW_BLOCKS = {
    BlockFormat.Q5_0: (32, 22),
    BlockFormat.Q4_K: (256, 144),
    BlockFormat.Q6_K: (256, 210),
    BlockFormat.Q5_K: (256, 176),
    BlockFormat.Q5_1: (32, 24),
}


def supports(qtype: GGMLQuantizationType) -> bool:
    """Whether BlockLinear.from_gguf takes tensors of this GGUF type."""
    return qtype in GGUF_FORMATS


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


GROUP_ROWS = 16  # native/qgemm.h's kGroupRows


def grouping() -> bool:
    """Whether Q8_0 / Q4_0 / Q4_1 products are grouped (AIOS_QGEMM_GROUPED, read at each packing; on unless 0)."""
    return os.environ.get("AIOS_QGEMM_GROUPED", "1") != "0"


def group_rows(codes: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed codes [N, row bytes] and scales [S, N, Gp] with rows apart → grouped (native/qgemm.h): codes of each 16
    rows as [32-byte units][8 fours][16 rows][4], scales [S, N / 16, Gp, 16]. The same bytes, reordered."""
    n, row_bytes = codes.shape
    planes, _, gp = scales.shape
    grouped = codes.view(n // GROUP_ROWS, GROUP_ROWS, row_bytes // BLOCK, 8, 4).permute(0, 2, 3, 1, 4)
    lanes = scales.view(planes, n // GROUP_ROWS, GROUP_ROWS, gp).transpose(2, 3)
    return grouped.contiguous().view(n, row_bytes), lanes.contiguous()


def ungroup_rows(codes: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """group_rows undone."""
    n, row_bytes = codes.shape
    planes, groups, gp, _ = scales.shape
    apart = codes.view(groups, row_bytes // BLOCK, 8, GROUP_ROWS, 4).permute(0, 3, 1, 2, 4)
    return apart.contiguous().view(n, row_bytes), scales.transpose(2, 3).contiguous().view(planes, n, gp)


def pack(weight: GroupQuantized, grouped: bool | None = None) -> tuple[BlockFormat, torch.Tensor, torch.Tensor]:
    """(format, codes uint8 [N, bytes], scales float16 [1 or 2, N, Gp]) in native/qgemm.h's layout; Gp is the row's
    block count rounded up to even, the padding blocks zero. With N a multiple of 16 they are grouped
    (group_rows: scales [S, N / 16, Gp, 16]) unless `grouped` is False (None: grouping())."""
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
    if (grouping() if grouped is None else grouped) and n % GROUP_ROWS == 0:
        return fmt, *group_rows(packed.contiguous(), scales.contiguous())
    return fmt, packed.contiguous(), scales.contiguous()


class BlockLinear:
    def __init__(self, weight: GroupQuantized, isa: Isa = Isa.AUTO, grouped: bool | None = None):
        """weight: [out, in] in a GGUF block format (block_format). Needs the native library (available()). grouped:
        as pack's."""
        self._ops = _ops()
        self.out_features, self.in_features = weight.shape
        self.format, self._codes, self._scales = pack(weight, grouped)
        self.isa = isa
        self.nbytes = self._codes.numel() + self._scales.numel() * self._scales.element_size()

    @classmethod
    def from_gguf(cls, raw, qtype: GGMLQuantizationType, shape: tuple[int, int], isa: Isa = Isa.AUTO) -> BlockLinear:
        """raw: the tensor's bytes as the file stores them (uint8, numpy or torch), shape = (out, in)."""
        fmt = GGUF_FORMATS.get(qtype)
        if fmt is None:
            raise ValueError(f"no block kernel for GGUF type {getattr(qtype, 'name', qtype)}")
        n, k = (int(v) for v in shape)
        array = raw.numpy() if isinstance(raw, torch.Tensor) else np.asarray(raw)
        if array.dtype != np.uint8:
            raise ValueError(f"raw GGUF bytes must be uint8, not {array.dtype}")
        if fmt in _PACKED_DECODERS:
            return cls(_packed(fmt, array, n, k), isa)
        per_block, block_bytes = RAW_BLOCKS[fmt]
        if n <= 0 or k <= 0 or k % per_block:
            raise ValueError(f"{fmt.name} needs rows of a multiple of {per_block} inputs, not {k}")
        row_bytes = k // per_block * block_bytes
        if array.size != n * row_bytes:
            raise ValueError(f"{fmt.name} [{n}, {k}] is {n * row_bytes} bytes, the data {array.size}")
        product = cls.__new__(cls)
        product._ops = _ops()
        product.out_features, product.in_features = n, k
        product.format, product.isa = fmt, isa
        codes = array.reshape(n, row_bytes)
        if not codes.flags.c_contiguous:
            codes = np.ascontiguousarray(codes)
        product._codes = torch.from_numpy(codes) if codes.flags.writeable else _readonly_tensor(codes)
        product._scales = torch.empty(0, dtype=torch.float16)
        product.nbytes = codes.size
        return product

    @classmethod
    def concat(cls, parts: list[BlockLinear]) -> BlockLinear:
        """The parts' rows stacked into one product (one format, one input size)."""
        first = parts[0]
        if any(p.format is not first.format or p.in_features != first.in_features for p in parts):
            raise ValueError("BlockLinear.concat needs parts of one format and one input size")
        product = cls.__new__(cls)
        product._ops, product.format, product.isa = first._ops, first.format, first.isa
        product.in_features = first.in_features
        product.out_features = sum(p.out_features for p in parts)
        if first.format in RAW_BLOCKS:
            product._codes, product._scales = torch.cat([p._codes for p in parts]), first._scales
        else:  # rows apart to stack them, then grouped again if the first part was and the rows still allow
            apart = [ungroup_rows(p._codes, p._scales) if p.grouped else (p._codes, p._scales) for p in parts]
            codes, scales = torch.cat([c for c, _ in apart]), torch.cat([s for _, s in apart], 1)
            regroup = first.grouped and product.out_features % GROUP_ROWS == 0
            product._codes, product._scales = group_rows(codes, scales) if regroup else (codes, scales)
        product.nbytes = sum(p.nbytes for p in parts)
        return product

    @property
    def grouped(self) -> bool:
        """Whether the rows are interleaved by 16 (group_rows)."""
        return self._scales.dim() == 4

    def native_kind(self) -> tuple[ProductKind, torch.Tensor, torch.Tensor]:
        """How native/decode_layers.cpp multiplies by this: the packed (or raw) codes and the scale planes (empty for
        the raw formats)."""
        return _KINDS[self.format], self._codes, self._scales

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: [T, in] → [T, out], in x's dtype."""
        return self._ops.qgemm(x, self._codes, self._scales, int(self.format), int(self.isa))


def _ops():
    ops = load()
    if ops is None:
        raise RuntimeError("BlockLinear needs the native CPU ops, which did not build")
    return ops


def _packed(fmt: BlockFormat, array: np.ndarray, n: int, k: int) -> GroupQuantized:
    block_bytes = {BlockFormat.Q8_0: 34, BlockFormat.Q4_0: 18, BlockFormat.Q4_1: 20}[fmt]
    if n <= 0 or k <= 0 or k % BLOCK or array.size != n * k // BLOCK * block_bytes:
        raise ValueError(f"{fmt.name} [{n}, {k}] does not match the data's {array.size} bytes")
    return _PACKED_DECODERS[fmt](array.reshape(n, -1))


def _readonly_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor over a read-only array (a memory-mapped file) without copying: the kernels never write weights."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch warns that writing would be undefined; nothing writes
        return torch.from_numpy(array)
