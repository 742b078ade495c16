"""A weight matrix kept as integer codes with groupwise affine scales, as GGUF stores it and torch's packed kernels
read it.

    w[n, k] = codes[n, k] * scale[n, k // group] + offset[n, k // group]

GGUF's Q4_0, Q4_1 and Q8_0 blocks decode into this form exactly (no float rounding: codes are the stored integers,
scale and offset the stored fp16 numbers widened to fp32), and so does Q4_K (super-blocks of 256 = 8 groups of 32,
each with its 6-bit scale and min: scale = d * sc, offset = -(dmin * m), products gguf's dequantizer rounds the same
way), so a quantized model reaches the packed int4/int8 kernels without a float copy of its weights. Other sources
(float tensors, other GGUF types) are quantized into it:
quantize_int4 (asymmetric, min/max per group of 32, like Q4_1) and quantize_int8_rows (symmetric, one scale per row,
what torch's int8 kernel reads). Dequantizing gives fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

INT4_GROUP = 32  # GGUF's block size, and a group size torch's int4 kernel accepts


@dataclass(frozen=True)
class GroupQuantized:
    codes: torch.Tensor  # int8 [N, K]: the stored integers, in [low, low + 2**bits - 1]
    scale: torch.Tensor  # float32 [N, K // group]
    offset: torch.Tensor  # float32 [N, K // group]
    group: int
    bits: int  # 4 or 8: how many levels the codes use
    low: int  # the smallest code: 0 (Q4_1, quantize_int4), -8 (Q4_0), -128 (Q8_0, int8 rows)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.codes.shape)

    def dequantize(self) -> torch.Tensor:
        """fp32 [N, K], computed in the order GGUF's reference dequantizer uses (codes * scale + offset)."""
        return self.dequantize_rows(slice(None))

    def dequantize_rows(self, rows) -> torch.Tensor:
        """fp32 [len(rows), K] of the selected rows only (an embedding lookup reads a few rows of a large table)."""
        codes = self.codes[rows]
        n, k = codes.shape
        grouped = codes.view(n, k // self.group, self.group).float()
        return (grouped * self.scale[rows][..., None] + self.offset[rows][..., None]).view(n, k)

    def permute_rows(self, permute) -> GroupQuantized:
        """The same weights with rows reordered by permute (a function of a [N, x] numpy array) — the rotary unpermute
        moves whole rows, and a row's scales travel with it."""

        def apply(t: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(permute(t.numpy())))

        return GroupQuantized(apply(self.codes), apply(self.scale), apply(self.offset), self.group, self.bits, self.low)


def concat_rows(parts: list[GroupQuantized]) -> GroupQuantized:
    """Stack matrices with the same input size and code format (q, k, v fused into one product)."""
    first = parts[0]
    if any((p.group, p.bits, p.low) != (first.group, first.bits, first.low) for p in parts):
        raise ValueError("concat_rows needs parts of one code format")
    return GroupQuantized(
        torch.cat([p.codes for p in parts]),
        torch.cat([p.scale for p in parts]),
        torch.cat([p.offset for p in parts]),
        first.group,
        first.bits,
        first.low,
    )


def quantize_int4(w: torch.Tensor, group: int = INT4_GROUP) -> GroupQuantized:
    """Asymmetric 4-bit, per group of `group` inputs: codes 0..15 spanning the group's [min, max] (Q4_1's scheme)."""
    n, k = w.shape
    grouped = w.float().reshape(n, k // group, group)
    lo, hi = grouped.amin(-1), grouped.amax(-1)
    scale = (hi - lo) / 15
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))  # a constant group: every code 0, offset = value
    codes = ((grouped - lo[..., None]) / safe[..., None]).round_().clamp_(0, 15)
    return GroupQuantized(codes.to(torch.int8).reshape(n, k), scale, lo, group, 4, 0)


def quantize_int8_rows(w: torch.Tensor) -> GroupQuantized:
    """Symmetric 8-bit, one scale per output row (absmax / 127): the layout torch's _weight_int8pack_mm reads."""
    k = w.shape[1]
    w = w.float()
    scale = w.abs().amax(-1, keepdim=True) / 127
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = (w / safe).round_().clamp_(-127, 127).to(torch.int8)
    return GroupQuantized(codes, scale, torch.zeros_like(scale), k, 8, -128)


# ---- GGUF blocks ----------------------------------------------------------------------------------------------------
# Each row of a GGUF tensor's data is a run of blocks of 32 weights; `raw` is that uint8 array, [N, blocks * bytes].


def _blocks(raw: np.ndarray, block_bytes: int) -> np.ndarray:
    n = raw.shape[0]
    return np.asarray(raw, dtype=np.uint8).reshape(n, -1, block_bytes)  # [N, G, block_bytes]


def _fp16(blocks: np.ndarray, start: int) -> torch.Tensor:
    return torch.from_numpy(
        np.ascontiguousarray(blocks[..., start : start + 2]).view(np.float16)[..., 0].astype(np.float32)
    )  # [N, G]


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """16 bytes → 32 codes: the low nibbles are weights 0..15 of the block, the high nibbles weights 16..31."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _gq(codes: np.ndarray, scale: torch.Tensor, offset: torch.Tensor, bits: int, low: int) -> GroupQuantized:
    n = codes.shape[0]
    return GroupQuantized(torch.from_numpy(np.ascontiguousarray(codes.reshape(n, -1))), scale, offset, 32, bits, low)


def from_q4_0(raw: np.ndarray) -> GroupQuantized:
    """Q4_0 block: fp16 d, 16 bytes of nibbles q; w = (q - 8) d."""
    blocks = _blocks(raw, 18)
    d = _fp16(blocks, 0)
    codes = _nibbles(blocks[..., 2:]).astype(np.int8) - 8
    return _gq(codes, d, torch.zeros_like(d), 4, -8)


def from_q4_1(raw: np.ndarray) -> GroupQuantized:
    """Q4_1 block: fp16 d, fp16 m, 16 bytes of nibbles q; w = q d + m."""
    blocks = _blocks(raw, 20)
    return _gq(_nibbles(blocks[..., 4:]).astype(np.int8), _fp16(blocks, 0), _fp16(blocks, 2), 4, 0)


def from_q4_k(raw: np.ndarray) -> GroupQuantized:
    """Q4_K super-block (256 weights, 144 bytes): fp16 d, fp16 dmin, 12 bytes of eight 6-bit (scale, min) pairs,
    128 bytes of nibbles; group j of 32: w = q (d sc_j) - dmin m_j. Byte chunk c (32 bytes) holds group 2c in its low
    nibbles and group 2c + 1 in its high ones."""
    from gguf.quants import Q4_K  # its scale unpacking, the reference's own

    blocks = _blocks(raw, 144)
    n, g = blocks.shape[:2]
    sc, m = Q4_K.get_scale_min(np.ascontiguousarray(blocks[..., 4:16]).reshape(n * g, 12))
    scale = _fp16(blocks, 0)[..., None] * torch.from_numpy(sc.reshape(n, g, 8).astype(np.float32))
    offset = -(_fp16(blocks, 2)[..., None] * torch.from_numpy(m.reshape(n, g, 8).astype(np.float32)))
    qs = blocks[..., 16:].reshape(n, g, 4, 1, 32)
    codes = ((qs >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 1, 2, 1)) & 0x0F).astype(np.int8)
    return _gq(codes, scale.reshape(n, g * 8), offset.reshape(n, g * 8), 4, 0)


def from_q8_0(raw: np.ndarray) -> GroupQuantized:
    """Q8_0 block: fp16 d, 32 int8 q; w = q d."""
    blocks = _blocks(raw, 34)
    d = _fp16(blocks, 0)
    return _gq(blocks[..., 2:].view(np.int8), d, torch.zeros_like(d), 8, -128)
