"""What the raw-format product tests (test_qgemm_kquants.py, test_qgemm_q5.py) share: random stored blocks of a GGUF
type with finite fp16 scales, and the exactness check of a product against gguf's dequantizer times the int8
activations the kernels actually multiply."""

from __future__ import annotations

import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize

from kernel.engine.cpu.block_weights import GGUF_FORMATS, RAW_BLOCKS, BlockLinear
from kernel.engine.cpu.native import load

# where each type's fp16 scales sit in a block (Q4_K/Q5_K: d, dmin; Q5_1: d, m; Q6_K: d after the codes)
SCALE_POSITIONS = {Q.Q5_0: (0,), Q.Q5_1: (0, 2), Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,)}
MAGNITUDES = [0.0, 6e-8, 3e-5, 1e-2, 1.0, 300.0, 65504.0]  # fp16: subnormal to the largest finite


def random_blocks(qtype: Q, n: int, k: int, rng, magnitude: float) -> np.ndarray:
    """[n, row bytes]: every code, high-bit and scale byte random, the fp16 scales finite (a file holds no inf)."""
    per_block, block_bytes = RAW_BLOCKS[GGUF_FORMATS[qtype]]
    raw = rng.integers(0, 256, (n, k // per_block, block_bytes), dtype=np.uint8)
    for at in SCALE_POSITIONS[qtype]:
        values = rng.uniform(-1, 1, (n, k // per_block)) * magnitude
        raw[..., at : at + 2] = values.astype(np.float16)[..., None].view(np.uint8)
    return raw.reshape(n, -1)


def check(product: BlockLinear, raw: np.ndarray, qtype: Q, x: torch.Tensor) -> None:
    n, k = product.out_features, product.in_features
    w = torch.from_numpy(dequantize(raw, qtype).reshape(n, k)).double()
    g = k // 32
    q, d, *_ = load().qgemm_quantize(x, g + g % 2)
    xd = (q.view(x.shape[0], -1, 32).double() * d.double()[..., None]).reshape(x.shape[0], -1)[:, :k]
    expected, magnitude = xd @ w.T, xd.abs() @ w.abs().T
    y = product(x).double()
    # exact integer dots per block, float32 scales and sums: a few float32 ulps of the terms' magnitude
    bad = (y - expected).abs() > magnitude * 4e-6 + 1e-30
    assert not bad.any(), (product.isa, qtype, (y - expected).abs().max(), x.shape)
