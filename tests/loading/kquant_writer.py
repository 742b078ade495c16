"""Block bytes of the GGUF types gguf's Python package can only read (it quantizes Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 but no
K-quant): Q5_K written here the way llama.cpp lays it out, so tests can build files holding them.

    quantize_q5_k(w [rows, k]) -> uint8 [rows, k / 256 * 176]

The quantizer is the plain one (per 32 weights a minimum clamped to at most 0 and a step spanning the rest, both
stored as 6-bit multiples of the super-block's fp16 d and dmin, rounded up so no code clamps), not llama.cpp's search
for the best scales: what matters to the readers is the layout, and gguf's dequantizer is the reference that reads it
back.
"""

from __future__ import annotations

import numpy as np


def _pack_scales(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and mins per super-block → the 12 bytes get_scale_min_k4 reads ([..., 8] each)."""
    sc, m = sc.astype(np.uint8), m.astype(np.uint8)
    out = np.zeros((*sc.shape[:-1], 12), dtype=np.uint8)
    out[..., 0:4] = (sc[..., 0:4] & 63) | ((sc[..., 4:8] >> 4) << 6)
    out[..., 4:8] = (m[..., 0:4] & 63) | ((m[..., 4:8] >> 4) << 6)
    out[..., 8:12] = (sc[..., 4:8] & 15) | ((m[..., 4:8] & 15) << 4)
    return out


def _fp16_covering(x: np.ndarray) -> np.ndarray:
    """x as fp16, rounded up where rounding to nearest went below it."""
    h = x.astype(np.float16)
    return np.where(h.astype(np.float32) < x, np.nextafter(h, np.float16(np.inf)), h)


def quantize_q5_k(w: np.ndarray) -> np.ndarray:
    rows, k = w.shape
    assert k % 256 == 0, k
    g = w.astype(np.float32).reshape(rows, k // 256, 8, 32)
    lo = np.minimum(g.min(-1), 0.0)
    dmin = _fp16_covering((-lo).max(-1) / 63)
    dmin32 = dmin.astype(np.float32)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        # multiples rounded up: the stored minimum and step cover the group, so no code is clamped
        m = np.clip(np.where(dmin32 > 0, np.ceil(-lo / dmin32), 0), 0, 63)
        offset = dmin32 * m
        step = (g.max(-1) + offset) / 31
        d = _fp16_covering(step.max(-1) / 63)
        d32 = d.astype(np.float32)[..., None]
        sc = np.clip(np.where(d32 > 0, np.ceil(step / d32), 0), 0, 63)
        scale = (d32 * sc)[..., None]
        q = np.clip(np.where(scale > 0, np.rint((g + offset[..., None]) / scale), 0), 0, 31).astype(np.uint8)
    # group j of 32: low nibbles in byte chunk j // 2 (low half for even j, high for odd), its fifth bit in qh bit j
    qs = (q[:, :, 0::2] & 15) | ((q[:, :, 1::2] & 15) << 4)  # [rows, supers, 4, 32]
    qh = np.zeros((rows, k // 256, 32), dtype=np.uint8)
    for j in range(8):
        qh |= (q[:, :, j] >> 4) << j
    blocks = np.concatenate(
        [
            d[..., None].view(np.uint8),
            dmin[..., None].view(np.uint8),
            _pack_scales(sc, m),
            qh,
            qs.reshape(rows, k // 256, 128),
        ],
        axis=-1,
    )
    return np.ascontiguousarray(blocks.reshape(rows, -1))
