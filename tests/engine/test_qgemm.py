"""The block-quantized products (native/qgemm*.cpp through block_weights.BlockLinear), each format on each instruction
set this CPU has, against a float64 reference built from gguf's own dequantizer and the activations as the kernel
quantized them; integer-exact cases where every float step is exact; the activation quantizer against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel.engine.cpu import block_weights
from kernel.engine.cpu.block_weights import BlockFormat, BlockLinear, Isa, block_format, quantize_q8_0
from kernel.engine.cpu.native import load
from kernel.engine.loading.quant_tensor import GroupQuantized, from_q4_0, from_q4_1, from_q8_0, quantize_int4

pytestmark = pytest.mark.skipif(load() is None, reason="native ops did not build")

FORMATS = {
    BlockFormat.Q8_0: (GGMLQuantizationType.Q8_0, from_q8_0),
    BlockFormat.Q4_0: (GGMLQuantizationType.Q4_0, from_q4_0),
    BlockFormat.Q4_1: (GGMLQuantizationType.Q4_1, from_q4_1),
}
ISAS = block_weights.supported_isas()


def _ops():
    return load()


def _reference(x: torch.Tensor, raw: np.ndarray, qtype, n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x as the kernel quantized it @ gguf's dequantized weights, in float64; the same with absolute values)."""
    w = torch.from_numpy(dequantize(raw, qtype).reshape(n, k)).double()
    g = k // 32
    q, d, *_ = _ops().qgemm_quantize(x, g + g % 2)
    xd = (q.view(x.shape[0], -1, 32).double() * d.double()[..., None]).reshape(x.shape[0], -1)[:, :k]
    return xd @ w.T, xd.abs() @ w.abs().T


def test_every_format_runs_on_every_isa_this_cpu_has():
    assert Isa.SCALAR in ISAS
    flags = set(next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split())
    assert (Isa.AVX2 in ISAS) == ("avx2" in flags)
    assert (Isa.AVX512 in ISAS) == ({"avx512f", "avx512bw", "avx512vl", "avx512_vnni"} <= flags)


@pytest.mark.parametrize("fmt", list(FORMATS))
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(1, 300),
    n=st.integers(1, 40),
    blocks=st.integers(1, 9),
    seed=st.integers(0, 2**32 - 1),
    spread=st.sampled_from([1e-3, 1.0, 50.0]),
)
def test_matches_gguf_dequantized_reference_on_each_isa(fmt, rows, n, blocks, seed, spread):
    qtype, decode = FORMATS[fmt]
    k = 32 * blocks
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, k)) * spread).astype(np.float32)
    raw = quantize(w, qtype)
    x = torch.from_numpy(rng.standard_normal((rows, k)).astype(np.float32))
    expected, magnitude = _reference(x, raw, qtype, n, k)
    for isa in ISAS:
        product = BlockLinear(decode(raw), isa)
        assert product.format is fmt
        y = product(x).double()
        # float32 sums of exact per-block integer dots: the error is a few float32 ulps of the terms' magnitude
        assert ((y - expected).abs() <= magnitude * 2e-6 + 1e-30).all(), (isa, (y - expected).abs().max())


def _integer_weights(fmt: BlockFormat, rng, n: int, k: int) -> GroupQuantized:
    """Weights whose scales are 1 (and Q4_1 offsets small integers): every weight an exact small integer."""
    g = k // 32
    ones, zeros = torch.ones(n, g), torch.zeros(n, g)
    if fmt is BlockFormat.Q8_0:
        return GroupQuantized(
            torch.from_numpy(rng.integers(-128, 128, (n, k), dtype=np.int8)), ones, zeros, 32, 8, -128
        )
    if fmt is BlockFormat.Q4_0:
        return GroupQuantized(torch.from_numpy(rng.integers(-8, 8, (n, k), dtype=np.int8)), ones, zeros, 32, 4, -8)
    offsets = torch.from_numpy(rng.integers(-4, 5, (n, g)).astype(np.float32))
    return GroupQuantized(torch.from_numpy(rng.integers(0, 16, (n, k), dtype=np.int8)), ones, offsets, 32, 4, 0)


@pytest.mark.parametrize("fmt", list(FORMATS))
@settings(max_examples=10, deadline=None)
@given(rows=st.integers(1, 13), n=st.integers(1, 37), blocks=st.integers(1, 16), seed=st.integers(0, 2**32 - 1))
def test_integer_accumulation_is_exact(fmt, rows, n, blocks, seed):
    """Activations that quantize to themselves (integers, each block's amax 127: d = 1) times integer weights: every
    product, block sum and scale is exact in float32, so each ISA must return the integer dot product exactly."""
    k = 32 * blocks
    rng = np.random.default_rng(seed)
    weight = _integer_weights(fmt, rng, n, k)
    x = rng.integers(-127, 128, (rows, k)).astype(np.float32)
    x.reshape(rows, blocks, 32)[:, :, 0] = 127.0
    expected = torch.from_numpy(x).double() @ weight.dequantize().double().T
    for isa in ISAS:
        y = BlockLinear(weight, isa)(torch.from_numpy(x)).double()
        assert torch.equal(y, expected), (isa, (y - expected).abs().max())


@settings(max_examples=20, deadline=None)
@given(
    rows=st.integers(1, 20),
    blocks=st.integers(1, 9),
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
)
def test_activation_quantizer_is_llamacpp_q8_0(rows, blocks, seed, dtype):
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((rows, 32 * blocks)).astype(np.float32) * 3).to(dtype)
    gp = blocks + blocks % 2
    q, d, s, d8, h16 = _ops().qgemm_quantize(x, gp)
    v = x.float().numpy().reshape(rows, blocks, 32)
    scale = np.abs(v).max(-1) / np.float32(127)
    inv = np.where(scale != 0, np.float32(1) / np.where(scale != 0, scale, 1), 0).astype(np.float32)
    codes = np.rint(v * inv[..., None]).astype(np.int8)
    assert np.array_equal(q.view(rows, gp, 32)[:, :blocks].numpy(), codes)
    assert np.array_equal(d[:, :blocks].numpy(), scale)
    assert np.array_equal(s[:, :blocks].numpy(), scale * codes.astype(np.int32).sum(-1).astype(np.float32))
    assert np.array_equal(d8.view(rows, gp, 8)[:, :blocks].numpy(), np.repeat(scale[..., None], 8, -1))
    halves = codes.reshape(rows, blocks, 2, 16).astype(np.int32).sum(-1)
    assert np.array_equal(h16.view(rows, gp, 2)[:, :blocks].numpy(), halves)
    assert not h16.view(rows, gp, 2)[:, blocks:].any()
    assert not q.view(rows, gp, 32)[:, blocks:].any() and not d[:, blocks:].any()  # padding adds nothing


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_a_rows_result_does_not_depend_on_its_neighbours(fmt):
    """Within a path (decode rows: up to 8; prompt rows: the blocked product) a row's value is one fixed-order sum."""
    qtype, decode = FORMATS[fmt]
    rng = np.random.default_rng(7)
    raw = quantize(rng.standard_normal((50, 160)).astype(np.float32), qtype)
    x = torch.from_numpy(rng.standard_normal((30, 160)).astype(np.float32)).to(torch.bfloat16)
    for isa in ISAS:
        product = BlockLinear(decode(raw), isa)
        few, many = product(x[:7]), product(x)
        assert few.dtype == many.dtype == torch.bfloat16
        for i in (0, 3, 6):
            assert torch.equal(product(x[i : i + 1]), few[i : i + 1])
        assert torch.equal(product(x[5:]), many[5:])  # other neighbours, other positions in the tiles of rows
        assert torch.equal(product(x[3:17]), many[3:17])


def test_gguf_formats_map_exactly_and_others_do_not():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 64)).astype(np.float32)
    for fmt, (qtype, decode) in FORMATS.items():
        assert block_format(decode(quantize(w, qtype))) is fmt
    assert block_format(quantize_int4(torch.from_numpy(w))) is BlockFormat.Q4_1
    ours = quantize_q8_0(torch.from_numpy(w))
    theirs = from_q8_0(quantize(w, GGMLQuantizationType.Q8_0))
    assert torch.equal(ours.codes, theirs.codes) and torch.equal(ours.scale, theirs.scale)
    rows = GroupQuantized(torch.zeros(4, 64, dtype=torch.int8), torch.ones(4, 1), torch.zeros(4, 1), 64, 8, -128)
    assert block_format(rows) is None
    with pytest.raises(ValueError):
        BlockLinear(rows)


def test_packed_bytes_are_the_files(tmp_path):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((8, 256)).astype(np.float32)
    for qtype, decode in FORMATS.values():
        raw = quantize(w, qtype)
        assert BlockLinear(decode(raw)).nbytes == raw.nbytes


def test_isa_cap_and_bad_input(monkeypatch):
    ops = _ops()
    product = BlockLinear(from_q4_0(quantize(np.ones((3, 64), np.float32), GGMLQuantizationType.Q4_0)))
    monkeypatch.setenv("AIOS_QGEMM_ISA", "scalar")
    assert ops.qgemm_isa(-1) == Isa.SCALAR
    if Isa.AVX2 in ISAS:
        monkeypatch.setenv("AIOS_QGEMM_ISA", "avx2")
        assert ops.qgemm_isa(-1) == Isa.AVX2
    monkeypatch.setenv("AIOS_QGEMM_ISA", "sse9")
    with pytest.raises(RuntimeError, match="AIOS_QGEMM_ISA"):
        product(torch.ones(1, 64))
    monkeypatch.delenv("AIOS_QGEMM_ISA")
    assert ops.qgemm_isa(-1) == max(ISAS)
    with pytest.raises(RuntimeError, match="inputs"):
        product(torch.ones(1, 128))
    with pytest.raises(RuntimeError, match="format"):
        ops.qgemm(torch.ones(1, 64), product._codes, product._scales, len(BlockFormat), -1)
    assert product(torch.ones(0, 64)).shape == (0, 3)


@pytest.mark.parametrize("mode", ["int4", "int8"])
def test_a_gguf_models_layers_decode_in_one_native_call_as_in_the_python_loop(mode):
    """The default SmolLM2 GGUF in an int mode: its layers are block products that decode_layers.cpp calls by kind;
    the one-call decode and the per-layer Python loop run the same products and give the same tokens."""
    from kernel.engine.cpu.engine import TorchEngine
    from kernel.engine.cpu.quant_weights import block_products
    from tests.engine.helpers import generate

    if not block_products():
        pytest.skip("AIOS_QGEMM=0")
    engine = TorchEngine.from_path(
        None, "bfloat16", weights=mode, kv_budget_tokens=512, max_batch=2, prefix_cache=False
    )
    model = engine.model
    assert all(
        isinstance(getattr(layer, name), BlockLinear)
        for layer in model.layers
        for name in ("qkv", "o", "gate_up", "down")
    )
    assert model._native_stack is not None
    kinds = set(model._native_stack[1])
    assert kinds <= {3, 4, 5} and (kinds & {4, 5} if mode == "int4" else kinds == {3})
    prompt = engine.tokenize("Agents speak to the kernel in small typed messages")
    one_call = generate(engine, {"a": prompt}, max_tokens=12, ignore_eos=True)["a"].tokens
    model._native_stack = None
    loop = generate(engine, {"b": prompt}, max_tokens=12, ignore_eos=True)["b"].tokens
    assert one_call == loop and len(one_call) == 12
