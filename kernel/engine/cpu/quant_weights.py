"""Weights modes: how a checkpoint's matrices become the model's products and its embedding table.

    fp32, bf16 (fp16)  float weights in that dtype, through Linear (dequantized from GGUF with gguf's reference code)
    int8               GGUF Q8_0 blocks (one fp16 scale per 32 inputs) through BlockLinear; without the native ops,
                       symmetric 8-bit codes with one scale per output row through Int8Linear
    int4               GGUF Q4_0 / Q4_1 blocks through BlockLinear; without the native ops, 4-bit codes with a scale
                       and zero per 32 inputs through Int4Linear

A product whose matrices all come from a GGUF file in block formats (GroupQuantized: Q4_0, Q4_1, Q8_0) is a
BlockLinear (block_weights.py: native kernels reading the file's bytes per weight, with int8 activations per block,
as llama.cpp does): int4 mode keeps Q4_0/Q4_1 exactly as stored, int8 mode keeps Q8_0 exactly; a block matrix of the
other width is dequantized and quantized for the mode (Q4_1 for int4 as before, llama.cpp's Q8_0 for int8). This
rather than a separate "gguf" mode: the modes aiosd and `auto` choose between keep their meaning (bits per weight),
and int8 gets Q8_0's per-block scales instead of a requantization to one scale per row. Float checkpoints keep
torch's kernels (Int4Linear / Int8Linear), as does everything with AIOS_QGEMM=0 (the old path, kept for comparison
and for machines where the native ops do not build).

A checkpoint weight is a float tensor, a GroupQuantized (codes and scales) or GGUFBlocks (loading/gguf_blocks.py: a GGUF
matrix still in the file's memory map). Products are built one at a time, and each GGUF matrix's pages are released
from the process once its product holds what it needs, so building never holds more than the products made so far and
one matrix in transit. With the native kernels, GGUF matrices whose stored type the mode keeps (int4: Q4_0, Q4_1 and,
where block_weights reads them as stored, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K — the 4-to-6-bit mixes llama.cpp writes; int8:
Q8_0) become a BlockLinear from the file's bytes (block_weights.BlockLinear.from_gguf: a repack, or the bytes
themselves); any other weight is dequantized to fp32 one matrix at a time and quantized for the mode (Q8_0 and Q4_x
into int8 rows, Q8_0 into int4, floats into either) — never the whole model as floats at once.

With torch's kernels (AIOS_QGEMM=0), Q8_0 (one scale per 32 inputs) has no exact int8 counterpart: _weight_int8pack_mm
takes one scale per row,
and a per-block product (K/32 small matmuls, or dequantizing each step) would lose the point of 8 bits. Requantizing a
row to its own absmax/127 scale costs up to half a row step per weight; bench/quality_bench.py measures what that does
to perplexity (see bench/RESULTS.md).

The lm_head follows the mode, except that int4 mode multiplies it in int8 unless its source already is 4-bit codes
(lm_head_mode): its errors land straight on the logits. Measured on SmolLM2 (Q8_0 table), perplexity vs fp32 on the
calibration text: int4 body + int4 lm_head 1.060, int4 body + int8 lm_head 1.013, int4 body + bf16 lm_head 1.000 (the
Q4_1 body maps exactly) — so the int8 head keeps int4 within the +3% target for the price of 49152 × 576 more bytes.
Where oneDNN's prepacked bfloat16 product runs and the activations are bfloat16, an int mode's lm_head is bfloat16
instead: it is faster than the int8 kernel at every row count (SmolLM2's head, 2 threads: 1.49 vs 1.64 ms at 1 row,
2.16 vs 5.48 ms at 8) and closer to fp32. The embedding lookup keeps the source's quantized codes when it has them
(a Q8_0 table is read exactly), otherwise the lm_head's int8 codes, dequantizing only the looked-up rows.

With the native kernels and a GGUF table in a type the kernels keep, the lm_head is the table's own blocks instead (a
Q8_0 table in int8, a 4-bit one as stored in int4): one read of the file's bytes per step rather than 2 bytes per
weight, and what llama.cpp multiplies. A GGUF table's lookup reads the file's bytes themselves (the memory map; only
the rows looked up are decoded, in every mode, and a tied lm_head's product is the table's only copy).
"""

from __future__ import annotations

import os

import torch
from gguf import GGMLQuantizationType

from kernel.engine.cpu import block_weights
from kernel.engine.cpu.block_weights import BlockFormat, BlockLinear, block_format, quantize_q8_0
from kernel.engine.cpu.linear import Linear, packing_available
from kernel.engine.cpu.quant_embedding import QuantizedEmbedding
from kernel.engine.cpu.quant_linear import Int4Linear, Int8Linear
from kernel.engine.loading.gguf_blocks import GGUFBlocks
from kernel.engine.loading.quant_tensor import (
    INT4_GROUP,
    GroupQuantized,
    concat_rows,
    quantize_int4,
    quantize_int8_rows,
)

FLOAT_MODES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
QUANT_MODES = ("int4", "int8")
WEIGHT_MODES = ("auto", "int4", "int8", "bf16", "fp32")  # what aiosd offers; fp16 is reachable through dtype only
_DTYPE_MODES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}

Weight = torch.Tensor | GroupQuantized | GGUFBlocks
_FLOAT_TYPES = (GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16)
# GGUF types each int mode multiplies as stored where the block kernels read them (see the module docstring)
KEPT_TYPES = {
    "int4": (
        GGMLQuantizationType.Q4_0,
        GGMLQuantizationType.Q4_1,
        GGMLQuantizationType.Q4_K,
        GGMLQuantizationType.Q5_0,
        GGMLQuantizationType.Q5_1,
        GGMLQuantizationType.Q5_K,
        GGMLQuantizationType.Q6_K,
    ),
    "int8": (GGMLQuantizationType.Q8_0,),
}


class SplitProduct:
    """An int4/int8 product for decode rows beside a bfloat16 copy of the same codes for prompt rows.

    With torch's integer kernels the model makes one whenever it computes in bfloat16; with BlockLinear (whose blocked
    product serves prompt rows from the same weights) only on request, AIOS_PREFILL_COPY=1, at 2 more bytes per weight.

    A decode row reads every weight for one row of arithmetic, so its time follows the weights' bytes and the integer
    kernels win; a prompt chunk does hundreds of rows of arithmetic per weight read, where the integer kernels
    dequantize as they go and oneDNN's prepacked bfloat16 product is 2.4x faster (measured: 512 rows of SmolLM2's
    matrices, int4 858 ms, bfloat16 353 ms). The copy is the codes dequantized (the weights' values rounded to
    bfloat16, as bf16 mode rounds them), so prompt and decode rows use the same weights; the price is the copy's bytes
    in memory (2 bytes per weight beside int4's ~0.6). Rows [0, narrow_rows) go through the integer kernel, the rest
    through the copy: which path a row takes depends on what it is, not on what else is in the step, so a sequence's
    tokens do not depend on its neighbours.
    """

    def __init__(self, narrow: Int4Linear | Int8Linear | BlockLinear, wide: Linear):
        self.narrow, self.wide = narrow, wide
        self.nbytes = narrow.nbytes  # bytes a decode step reads
        self.out_features = narrow.out_features

    def native_kind(self):
        """A pure-decode step's rows are all narrow: the integer kernel's."""
        return self.narrow.native_kind()

    def __call__(self, x: torch.Tensor, narrow_rows: int) -> torch.Tensor:
        if narrow_rows >= x.shape[0]:
            return self.narrow(x)
        if narrow_rows == 0:
            return self.wide(x)
        return torch.cat([self.narrow(x[:narrow_rows]), self.wide(x[narrow_rows:])])


Product = Linear | Int4Linear | Int8Linear | BlockLinear | SplitProduct


def multiply(product: Product, x: torch.Tensor, narrow_rows: int) -> torch.Tensor:
    """product(x), rows [0, narrow_rows) on a SplitProduct's integer path (the others have one path)."""
    return product(x, narrow_rows) if isinstance(product, SplitProduct) else product(x)


def natural_mode(dtype: torch.dtype) -> str:
    """The mode that stores weights in the compute dtype itself (what the engine did before weights modes existed)."""
    return _DTYPE_MODES[dtype]


def as_float(weight: Weight, dtype: torch.dtype) -> torch.Tensor:
    return (weight.dequantize() if isinstance(weight, GroupQuantized | GGUFBlocks) else weight).to(dtype)


def _codes(weight: Weight) -> Weight:
    """A GGUF matrix as its stored codes (GroupQuantized) where it has that form, else unchanged."""
    if isinstance(weight, GGUFBlocks):
        return weight.group_quantized() or weight
    return weight


def is_quantized(weight: Weight) -> bool:
    """Whether the weight comes as integer codes (not a float tensor or a float GGUF matrix)."""
    if isinstance(weight, GGUFBlocks):
        return weight.qtype not in _FLOAT_TYPES
    return isinstance(weight, GroupQuantized)


def as_int4(weight: Weight) -> GroupQuantized:
    weight = _codes(weight)
    if isinstance(weight, GroupQuantized) and weight.bits == 4 and weight.group == INT4_GROUP:
        return weight  # Q4_0 / Q4_1: the stored codes, exactly
    return quantize_int4(as_float(weight, torch.float32))


def as_int8_rows(weight: Weight) -> GroupQuantized:
    if (
        isinstance(weight, GroupQuantized)
        and weight.bits == 8
        and weight.group == weight.shape[1]
        and not weight.offset.any()
    ):
        return weight
    return quantize_int8_rows(as_float(weight, torch.float32))


def block_products() -> bool:
    """Whether the int modes multiply with BlockLinear (the native ops built, AIOS_QGEMM is not 0)."""
    return os.environ.get("AIOS_QGEMM", "1") != "0" and block_weights.available()


def as_q8_0(weight: Weight) -> GroupQuantized:
    weight = _codes(weight)
    if isinstance(weight, GroupQuantized) and block_format(weight) is BlockFormat.Q8_0:
        return weight  # Q8_0: the stored blocks, exactly
    return quantize_q8_0(as_float(weight, torch.float32))


def _as_q4_1(weight: GroupQuantized) -> GroupQuantized:
    """4-bit codes shifted to 0..15 with the offset absorbing the shift (Q4_0's w = d (q - 8) as d q + (-8 d)), so that
    parts of both formats can share one product; exact."""
    if weight.low == 0:
        return weight
    return GroupQuantized(
        (weight.codes - weight.low).to(torch.int8),
        weight.scale,
        weight.offset + weight.low * weight.scale,
        weight.group,
        weight.bits,
        0,
    )


# stored types wider than 4 bits: a fused product of mixed types that holds one keeps them at 8 bits in int4 mode
_WIDER_THAN_4 = (
    GGMLQuantizationType.Q5_0,
    GGMLQuantizationType.Q5_1,
    GGMLQuantizationType.Q5_K,
    GGMLQuantizationType.Q6_K,
    GGMLQuantizationType.Q8_0,
)


def _block_codes(parts: list[Weight], mode: str) -> GroupQuantized:
    """Codes for one product whose parts could not stay as stored. In int4 mode, parts of mixed types with one wider
    than 4 bits (Gemma 3 Q4_K_M: Q5_0 q and k beside a Q8_0 v) become Q8_0 rather than 4 bits, as llama.cpp keeps
    them at their own width: to 4 bits, the 270M file's perplexity was 1.038x llama.cpp's, at Q8_0 0.998x (a few MB
    more)."""
    qtypes = {getattr(p, "qtype", None) for p in parts}
    if mode == "int8" or (len(qtypes) > 1 and qtypes & set(_WIDER_THAN_4)):
        return concat_rows([as_q8_0(p) for p in parts])
    codes = [as_int4(p) for p in parts]
    if len({c.low for c in codes}) > 1:
        codes = [_as_q4_1(c) for c in codes]
    return concat_rows(codes)


def lm_head_mode(mode: str, source: Weight, dtype: torch.dtype = torch.float32) -> str:
    """The mode of the lm_head product (see the module docstring)."""
    if mode in QUANT_MODES and block_products() and isinstance(source, GGUFBlocks):
        if source.qtype in KEPT_TYPES["int8"]:
            return "int8"  # the stored Q8_0 blocks
        if mode == "int4" and source.qtype in KEPT_TYPES["int4"]:
            return "int4"  # the stored 4-bit blocks
    if mode in QUANT_MODES and dtype == torch.bfloat16 and packing_available():
        return "bf16"
    exact_int4 = is_quantized(source) and source.bits == 4 and source.group == INT4_GROUP
    return "int8" if mode == "int4" and not exact_int4 else mode


def _stored_product(parts: list[Weight], mode: str) -> BlockLinear | None:
    """The parts' stored GGUF blocks as one BlockLinear, when they share a type the mode keeps and the kernels read it
    as stored (BlockLinear.from_gguf); else None. Parts of different types (a Q4_K_M file's Q4_K q beside its Q6_K v)
    cannot share one product: they go the requantizing way."""
    if not all(isinstance(p, GGUFBlocks) for p in parts):
        return None
    qtype = parts[0].qtype
    if any(p.qtype != qtype for p in parts) or qtype not in KEPT_TYPES[mode] or not block_weights.supports(qtype):
        return None
    products = [BlockLinear.from_gguf(p.raw(), qtype, p.shape) for p in parts]
    return products[0] if len(products) == 1 else BlockLinear.concat(products)


def _release(parts: list[Weight]) -> None:
    """The GGUF matrices' pages out of this process once their product is built (gguf_blocks.WeightFile.release)."""
    for part in parts:
        if isinstance(part, GGUFBlocks):
            part.release()


def build_product(parts: list[Weight], mode: str, wide_copy: bool = False) -> Product:
    """One product for the row-concatenation of parts (q, k, v or gate, up fused), [sum of outs, in]. wide_copy: an
    int mode's product is a SplitProduct (a bfloat16 copy for prompt rows) where oneDNN's prepacked bfloat16 product
    runs; elsewhere the copy would be no faster than the integer kernel and is not made. With BlockLinear the copy is
    opt-in (AIOS_PREFILL_COPY=1, SplitProduct). A GGUF part's pages are released once the product is built."""
    product = _product(parts, mode, wide_copy)
    _release(parts)
    return product


def _product(parts: list[Weight], mode: str, wide_copy: bool) -> Product:
    if mode in FLOAT_MODES:
        dtype = FLOAT_MODES[mode]
        return Linear(torch.cat([as_float(p, dtype) for p in parts]) if len(parts) > 1 else as_float(parts[0], dtype))
    codes = None
    if mode in QUANT_MODES and block_products() and all(is_quantized(p) for p in parts):
        narrow = _stored_product(parts, mode)
        if narrow is None:
            codes = _block_codes(parts, mode)
            narrow = BlockLinear(codes)
        wide_copy = wide_copy and os.environ.get("AIOS_PREFILL_COPY", "0") == "1"
    elif mode == "int4":
        codes = concat_rows([as_int4(p) for p in parts])
        narrow = Int4Linear(codes)
    elif mode == "int8":
        codes = concat_rows([as_int8_rows(p) for p in parts])
        narrow = Int8Linear(codes)
    else:
        raise ValueError(f"unknown weights mode {mode!r}")
    if wide_copy and packing_available():
        # the copy holds the values the integer path multiplies: the codes it was built from, else the stored blocks
        wide = codes.dequantize() if codes is not None else torch.cat([as_float(p, torch.float32) for p in parts])
        return SplitProduct(narrow, Linear(wide.to(torch.bfloat16)))
    return narrow


def build_embedding(table: Weight, lm_head: Product, mode: str, dtype: torch.dtype):
    """The embedding lookup: a float tensor in float modes, else a QuantizedEmbedding (see the module docstring); a
    GGUF table is looked up in the file's bytes in every mode, its rows rounded as the mode's weights are."""
    if isinstance(table, GGUFBlocks):
        return QuantizedEmbedding(table, dtype, FLOAT_MODES.get(mode, torch.float32))
    if mode in FLOAT_MODES:
        # Rounded as the mode's weights are, stored in the compute dtype: the forward pass casts nothing, the
        # residual stream starts in dtype.
        return as_float(table, FLOAT_MODES[mode]).to(dtype)
    if isinstance(table, GroupQuantized):
        return QuantizedEmbedding(table, dtype)
    if isinstance(lm_head, Int8Linear):  # tied: share the lm_head's codes, no second copy
        return QuantizedEmbedding(lm_head.weight, dtype)
    return QuantizedEmbedding(quantize_int8_rows(table.float()), dtype)
