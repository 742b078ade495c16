"""Q5_K and Q5_1 multiplied from the file's bytes (BlockLinear.from_gguf): decode rows (1-8, the row kernels) and
prompt rows (the blocked product) on each instruction set this CPU has, AVX2 forced too, against gguf's own
dequantizer times the activations as the kernel quantized them; on hostile random blocks (any code, fifth-bit and
scale byte, fp16 scales from subnormal to the largest finite) and on gguf's and tests/loading/kquant_writer.py's
quantizations of real-looking values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf.quants import quantize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel.engine.cpu.block_weights import GGUF_FORMATS, BlockFormat, BlockLinear, Isa, supported_isas
from kernel.engine.cpu.native import ProductKind, load
from tests.engine.qgemm_checks import MAGNITUDES, check, random_blocks
from tests.loading.kquant_writer import quantize_q5_k

pytestmark = pytest.mark.skipif(load() is None, reason="native ops did not build")

ISAS = supported_isas()
Q5 = [Q.Q5_K, Q.Q5_1]


def columns(qtype: Q, blocks: int) -> int:
    """Inputs of a row of `blocks` stored blocks (Q5_1 rows may be any number of 32-blocks, odd ones too)."""
    return blocks * (256 if qtype is Q.Q5_K else 32)


@pytest.mark.parametrize("qtype", Q5)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 37]),
    n=st.integers(1, 40),
    blocks=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
    magnitude=st.sampled_from(MAGNITUDES),
    x_scale=st.sampled_from([1e-3, 1.0, 100.0]),
)
def test_random_blocks_match_ggufs_dequantizer_on_each_isa(qtype, rows, n, blocks, seed, magnitude, x_scale):
    k = columns(qtype, blocks)
    rng = np.random.default_rng(seed)
    raw = random_blocks(qtype, n, k, rng, magnitude)
    x = torch.from_numpy((rng.standard_normal((rows, k)) * x_scale).astype(np.float32))
    for isa in ISAS:
        product = BlockLinear.from_gguf(raw, qtype, (n, k), isa)
        assert product.format is GGUF_FORMATS[qtype] and product.nbytes == raw.nbytes
        check(product, raw, qtype, x)


@pytest.mark.parametrize("qtype", Q5)
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 6, 7, 8, 64])
def test_quantized_values_every_row_count_and_isa(qtype, rows, monkeypatch):
    """Blocks the way a file holds them (gguf's Q5_1 quantizer, the test writer's Q5_K) of values with an offset, so
    the per-block minimum matters; the automatic choice under each AIOS_QGEMM_ISA cap as well as each forced ISA."""
    rng = np.random.default_rng(rows)
    n, k = 37, columns(qtype, 3)
    w = (rng.standard_normal((n, k)) * 0.05 + 0.02).astype(np.float32)
    raw = quantize_q5_k(w) if qtype is Q.Q5_K else quantize(w, qtype)
    x = torch.from_numpy(rng.standard_normal((rows, k)).astype(np.float32))
    for isa in ISAS:
        check(BlockLinear.from_gguf(raw, qtype, (n, k), isa), raw, qtype, x)
    for cap in ("scalar", "avx2", "avx512"):
        monkeypatch.setenv("AIOS_QGEMM_ISA", cap)
        check(BlockLinear.from_gguf(raw, qtype, (n, k)), raw, qtype, x)


@pytest.mark.parametrize("qtype", Q5)
def test_a_rows_result_does_not_depend_on_its_neighbours(qtype):
    rng = np.random.default_rng(3)
    k = columns(qtype, 2) if qtype is Q.Q5_K else columns(qtype, 15)
    raw = random_blocks(qtype, 33, k, rng, 0.01)
    x = torch.from_numpy(rng.standard_normal((21, k)).astype(np.float32)).to(torch.bfloat16)
    for isa in ISAS:
        product = BlockLinear.from_gguf(raw, qtype, (33, k), isa)
        together = product(x)
        for i in (0, 5, 20):
            assert torch.equal(product(x[i : i + 1]), together[i : i + 1])
        assert torch.equal(product(x[6:13]), together[6:13])


def test_the_file_bytes_are_not_copied_and_products_concatenate():
    rng = np.random.default_rng(6)
    q = random_blocks(Q.Q5_K, 8, 512, rng, 0.01)
    k = random_blocks(Q.Q5_K, 4, 512, rng, 0.01)
    product = BlockLinear.from_gguf(q, Q.Q5_K, (8, 512))
    assert product.native_kind()[0] is ProductKind.Q5_K and product.format is BlockFormat.Q5_K
    assert product.native_kind()[1].data_ptr() == q.ctypes.data  # a view of the caller's bytes, not a copy
    other = BlockLinear.from_gguf(k, Q.Q5_K, (4, 512))
    fused = BlockLinear.concat([product, other])
    x = torch.randn(3, 512)
    assert torch.equal(fused(x), torch.cat([product(x), other(x)], 1))
    q5_1 = BlockLinear.from_gguf(random_blocks(Q.Q5_1, 2, 512, rng, 1), Q.Q5_1, (2, 512))
    assert q5_1.native_kind()[0] is ProductKind.Q5_1
    with pytest.raises(ValueError, match="one format"):
        BlockLinear.concat([product, q5_1])


def test_bad_input_is_refused_clearly():
    rng = np.random.default_rng(8)
    raw = random_blocks(Q.Q5_K, 4, 512, rng, 1)
    with pytest.raises(ValueError, match="bytes"):
        BlockLinear.from_gguf(raw, Q.Q5_K, (5, 512))
    with pytest.raises(ValueError, match="multiple of 256"):
        BlockLinear.from_gguf(raw, Q.Q5_K, (4, 480))
    with pytest.raises(ValueError, match="multiple of 32"):
        BlockLinear.from_gguf(random_blocks(Q.Q5_1, 4, 64, rng, 1), Q.Q5_1, (4, 48))
    product = BlockLinear.from_gguf(raw, Q.Q5_K, (4, 512), Isa.SCALAR)
    with pytest.raises(RuntimeError, match="inputs"):
        product(torch.ones(1, 256))
    assert product(torch.ones(0, 512)).shape == (0, 4)
