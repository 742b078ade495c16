"""GGUF block types the native kernels do not multiply, re-expressed once at load in the nearest type they do.

    REEXPRESSED          {stored type: the type it becomes}; empty at present: Q5_K and Q5_1, once re-expressed here
                         as Q6_K and Q5_0 (neither exact: both carry a per-block minimum the targets lack), are
                         multiplied as stored (native/qgemm_q5*.cpp). The machinery stays for a type a kernel does not
                         read yet and some kept type holds exactly or nearly.
    reexpress(raw, stored, target) -> uint8 [rows, the target's row bytes]: the stored blocks' values (gguf's reference
                         dequantizer) quantized into the target type (Q6_K by quantize_q6_k, the 32-blocks by gguf's
                         reference quantizer)
    quantize_q6_k(w)     float32 [rows, k] (k a multiple of 256) → Q6_K bytes [rows, k / 256 * 210]

What a re-expression costs: every value moves by at most half a step of the target's grid (Q6_K: one step per 16
weights), against the 4-bit requantization the int4 mode would otherwise apply. bench/perplexity_peer.py measures the
result against the file's own weights.

Invariants: only the target's bytes are produced (the file is never written); the values are computed in float32 from
gguf's dequantizer, so a stored matrix converts the same on every machine; the target's scales are finite fp16.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize

Q = GGMLQuantizationType
REEXPRESSED: dict[GGMLQuantizationType, GGMLQuantizationType] = {}
_SUPER = 256
_SUB = 16  # Q6_K: one int8 scale per 16 weights
_FP16_MAX = 65504.0


def reexpress(raw: np.ndarray, stored: GGMLQuantizationType, target: GGMLQuantizationType) -> np.ndarray:
    """raw: uint8 [rows, stored row bytes] → uint8 [rows, target row bytes] (target Q6_K or a type gguf quantizes)."""
    rows = raw.shape[0]
    values = dequantize(np.ascontiguousarray(raw), stored).reshape(rows, -1).astype(np.float32)
    if target is Q.Q6_K:
        return quantize_q6_k(values)
    out = quantize(values, target)  # llama.cpp's reference quantizer for the 32-blocks (gguf implements Q5_0's)
    return np.ascontiguousarray(out.reshape(rows, -1))


def quantize_q6_k(w: np.ndarray) -> np.ndarray:
    """Q6_K of w [rows, k]: per 16 weights a step δ = -(the value of largest magnitude) / 32, so that value is code -32
    exactly and the rest fall in [-32, 31]; the 16 steps of a super-block stored as int8 multiples of one fp16 d
    (d = max |δ| / 127, each multiple rounded away from zero), and the codes rounded again against those stored
    steps, so each value is off by at most half its stored step (a value at +32 steps, if any, is clamped to 31)."""
    rows, k = w.shape
    if k % _SUPER:
        raise ValueError(f"Q6_K needs rows of whole super-blocks of {_SUPER}, got {k}")
    sub = w.astype(np.float32).reshape(rows, k // _SUPER, _SUPER // _SUB, _SUB)
    pick = np.abs(sub).argmax(-1)[..., None]
    step = np.take_along_axis(sub, pick, -1)[..., 0] / -32.0  # [rows, supers, 16]
    largest = np.abs(step).max(-1)  # [rows, supers]
    d = np.minimum(largest / 127.0, _FP16_MAX).astype(np.float16)
    short = (d.astype(np.float32) * 127 < largest) & (d < np.float16(_FP16_MAX))
    d = np.where(short, np.nextafter(d, np.float16(_FP16_MAX)), d)  # d * 127 covers every step (within fp16)
    d32 = d.astype(np.float32)
    # each step's multiple of d rounded away from zero: the stored step is never smaller than the one wanted, so the
    # largest value still lands on code -32 (rounded down, it could fall past it and be clamped by many steps)
    with np.errstate(divide="ignore", invalid="ignore"):
        scales = np.where(d32[..., None] > 0, np.sign(step) * np.ceil(np.abs(step) / d32[..., None]), 0.0)
    scales = np.clip(scales, -127, 127).astype(np.int8)
    stored = d32[..., None] * scales.astype(np.float32)  # the step the file will hold, per 16
    with np.errstate(divide="ignore", invalid="ignore"):
        codes = np.where(stored[..., None] != 0, np.rint(sub / stored[..., None]), 0.0)
    u = (np.clip(codes, -32, 31) + 32).astype(np.uint8).reshape(rows * (k // _SUPER), 2, 4, 32)  # half, quarter, l
    ql = np.concatenate(
        [(u[:, :, 0] & 15) | ((u[:, :, 2] & 15) << 4), (u[:, :, 1] & 15) | ((u[:, :, 3] & 15) << 4)], -1
    )
    qh = (u[:, :, 0] >> 4) | ((u[:, :, 1] >> 4) << 2) | ((u[:, :, 2] >> 4) << 4) | ((u[:, :, 3] >> 4) << 6)
    blocks = np.concatenate(
        [
            ql.reshape(-1, 128),
            qh.reshape(-1, 64),
            scales.reshape(-1, _SUB).view(np.uint8),
            d.reshape(-1, 1).view(np.uint8),
        ],
        axis=-1,
    )
    return np.ascontiguousarray(blocks.reshape(rows, -1))
