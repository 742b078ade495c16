"""Grouped block weights (block_weights.group_rows; native/qgemm.h's grouped layout, qgemm_group_kernels.cpp): the
grouping is a pure reordering of the packed bytes as qgemm.h documents it; grouped products are exact to a few float32
ulps against a float64 reference of the dequantized weights times the int8 activations the kernels multiply; decode
rows (1..8) are, on every instruction set this CPU has, bit for bit an exact emulation of the float operations qgemm.h
documents, and prompt rows (> 8) the bits of rows apart; a row's value does not depend on its neighbours; concat
regroups as it documents; mis-shaped grouped weights are clear errors at the op boundary; the pooled decode layer loop
over grouped weights is the per-op loop, bit for bit. Every format is tried; the grouped-only assertions run for the
formats BlockLinear actually groups (GROUPABLE)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kernel.engine.cpu import block_weights
from kernel.engine.cpu.block_weights import GROUP_ROWS, BlockFormat, BlockLinear, Isa, group_rows, pack, ungroup_rows
from kernel.engine.cpu.native import load
from kernel.engine.loading.quant_tensor import GroupQuantized, from_q4_0, from_q4_1, from_q8_0
from tests.engine.qgemm_checks import MAGNITUDES

library = load()
pytestmark = pytest.mark.skipif(library is None, reason="native ops did not build")

# format: (GGUF type, decoder, where the block's fp16 scales sit, bytes per block)
FORMATS = {
    BlockFormat.Q8_0: (Q.Q8_0, from_q8_0, (0,), 34),
    BlockFormat.Q4_0: (Q.Q4_0, from_q4_0, (0,), 18),
    BlockFormat.Q4_1: (Q.Q4_1, from_q4_1, (0, 2), 20),
}
ISAS = block_weights.supported_isas()
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# output rows: whole groups of 16 (the grouped layout) and not
N_ANY = st.one_of(st.integers(1, 5).map(lambda g: g * GROUP_ROWS), st.integers(1, 70))


def random_weight(fmt: BlockFormat, n: int, k: int, rng, magnitude: float) -> GroupQuantized:
    """Stored blocks with every code byte random (the full code range) and finite fp16 scales of about `magnitude`."""
    _, decode, scale_at, block_bytes = FORMATS[fmt]
    raw = rng.integers(0, 256, (n, k // 32, block_bytes), dtype=np.uint8)
    for at in scale_at:
        values = rng.uniform(-1, 1, (n, k // 32)) * magnitude
        raw[..., at : at + 2] = values.astype(np.float16)[..., None].view(np.uint8)
    return decode(raw.reshape(n, -1))


def groupable(fmt: BlockFormat) -> bool:
    return BlockLinear(random_weight(fmt, GROUP_ROWS, 64, np.random.default_rng(0), 1.0), grouped=True).grouped


GROUPABLE = {fmt for fmt in FORMATS if library is not None and groupable(fmt)}
NONE_GROUPED = [pytest.param(None, marks=pytest.mark.skip(reason="no format is grouped"))]


def stack(parts: list[GroupQuantized]) -> GroupQuantized:
    first = parts[0]
    cat = lambda name: torch.cat([getattr(p, name) for p in parts])
    return GroupQuantized(cat("codes"), cat("scale"), cat("offset"), first.group, first.bits, first.low)


def check_exact(y: torch.Tensor, weight: GroupQuantized, x: torch.Tensor, what) -> None:
    """y within a few float32 ulps of the terms' magnitude of the kernels' int8 activations times the weights."""
    (n, k), rows = weight.shape, x.shape[0]
    g = k // 32
    q, d, *_ = library.qgemm_quantize(x, g + g % 2)
    xd = (q.view(rows, -1, 32).double() * d.double()[..., None]).reshape(rows, -1)[:, :k]
    blocks = weight.codes.double().view(n, g, 32)
    w = (blocks * weight.scale.double()[..., None] + weight.offset.double()[..., None]).reshape(n, k)
    expected, magnitude = xd @ w.T, xd.abs() @ w.abs().T
    error = (y.double() - expected).abs()
    assert not (error > magnitude * 4e-6 + 1e-30).any(), (what, error.max(), x.shape)


def activations(rng, rows: int, k: int) -> torch.Tensor:
    return torch.from_numpy((rng.standard_normal((rows, k)) * 3).astype(np.float32))


@pytest.mark.parametrize("fmt", list(FORMATS))
@SETTINGS
@given(n=N_ANY, blocks=st.integers(1, 13), seed=st.integers(0, 2**32 - 1), magnitude=st.sampled_from(MAGNITUDES))
def test_grouping_is_the_documented_reordering_of_the_same_bytes(fmt, n, blocks, seed, magnitude):
    rng = np.random.default_rng(seed)
    weight = random_weight(fmt, n, 32 * blocks, rng, magnitude)
    _, codes, scales = pack(weight, grouped=False)
    packed_fmt, gcodes, gscales = pack(weight, grouped=True)
    assert packed_fmt is fmt and scales.dim() == 3
    if fmt not in GROUPABLE or n % GROUP_ROWS:
        assert torch.equal(gcodes, codes) and torch.equal(gscales, scales)  # rows that cannot be grouped stay apart
        return
    assert gscales.shape == (scales.shape[0], n // GROUP_ROWS, scales.shape[2], GROUP_ROWS)
    assert gcodes.shape == codes.shape and gcodes.nbytes == codes.nbytes and gscales.nbytes == scales.nbytes
    assert torch.equal(gcodes.flatten().sort().values, codes.flatten().sort().values)  # the same multiset of bytes
    # qgemm.h: group g's codes at byte g * 16 * row bytes, in 32-byte units per row (a Q8_0 block, a pair of 4-bit
    # blocks) [units u][fours j][rows i][4 bytes c] ← row 16g + i's byte 4j + c of unit u; scales [S, g, block, i] ←
    # [S, 16g + i, block]
    row_bytes = codes.shape[1]
    g, u, j, i, c = np.meshgrid(*(np.arange(v) for v in (n // 16, row_bytes // 32, 8, 16, 4)), indexing="ij")
    at_grouped = g * 16 * row_bytes + u * 512 + j * 64 + i * 4 + c
    at_apart = (16 * g + i) * row_bytes + u * 32 + 4 * j + c
    assert np.array_equal(gcodes.numpy().ravel()[at_grouped], codes.numpy().ravel()[at_apart])
    lanes = scales.view(scales.shape[0], n // 16, 16, -1).transpose(2, 3)
    assert torch.equal(gscales.view(torch.int16), lanes.contiguous().view(torch.int16))
    assert all(torch.equal(a, b) for a, b in zip(group_rows(codes, scales), (gcodes, gscales)))
    assert all(torch.equal(a, b) for a, b in zip(ungroup_rows(gcodes, gscales), (codes, scales)))


def test_grouping_follows_the_environment_and_the_row_count(monkeypatch):
    rng = np.random.default_rng(3)
    for fmt in GROUPABLE:
        weight, odd = random_weight(fmt, 32, 96, rng, 1.0), random_weight(fmt, 40, 96, rng, 1.0)
        monkeypatch.delenv("AIOS_QGEMM_GROUPED", raising=False)
        assert block_weights.grouping() and BlockLinear(weight).grouped and not BlockLinear(odd, grouped=True).grouped
        monkeypatch.setenv("AIOS_QGEMM_GROUPED", "0")
        assert not block_weights.grouping() and not BlockLinear(weight).grouped and pack(weight)[2].dim() == 3
        assert BlockLinear(weight, grouped=True).grouped  # an explicit choice wins over the default
        monkeypatch.setenv("AIOS_QGEMM_GROUPED", "1")
        assert BlockLinear(weight).grouped and not BlockLinear(weight, grouped=False).grouped
    if BlockFormat.Q8_0 not in GROUPABLE:
        assert not BlockLinear(random_weight(BlockFormat.Q8_0, 32, 64, rng, 1.0), grouped=True).grouped


@pytest.mark.parametrize("fmt", list(FORMATS))
@SETTINGS
@given(
    n=N_ANY,
    blocks=st.integers(1, 13),
    rows=st.integers(1, 20),
    seed=st.integers(0, 2**32 - 1),
    magnitude=st.sampled_from(MAGNITUDES),
)
def test_grouped_products_are_exact_and_isa_independent(fmt, n, blocks, rows, seed, magnitude):
    rng = np.random.default_rng(seed)
    k = 32 * blocks
    weight, x = random_weight(fmt, n, k, rng, magnitude), activations(rng, rows, k)
    outputs = {}
    for isa in ISAS:
        grouped, apart = BlockLinear(weight, isa, grouped=True), BlockLinear(weight, isa, grouped=False)
        assert grouped.grouped == (fmt in GROUPABLE and n % GROUP_ROWS == 0) and not apart.grouped
        assert grouped.nbytes == apart.nbytes
        outputs[isa], y_apart = grouped(x), apart(x)
        check_exact(outputs[isa], weight, x, (isa, "grouped"))
        check_exact(y_apart, weight, x, (isa, "apart"))
        if rows > 8:  # the blocked product decodes grouped rows into the same tiles as rows apart
            assert torch.equal(outputs[isa], y_apart), isa
    if grouped.grouped and rows <= 8:  # the group kernels: the same float operations in the same order on every ISA
        for isa in ISAS:
            assert torch.equal(outputs[isa], outputs[Isa.SCALAR]), (isa, (outputs[isa] - outputs[Isa.SCALAR]).abs())


def fma32(a: float, b: float, c: float) -> float:
    """float32 fma: a * b + c exact (fractions), rounded once to the nearest float32, ties to the even one."""
    exact = Fraction(a) * Fraction(b) + Fraction(c)
    near = np.float32(float(exact))
    candidates = (near, np.nextafter(near, np.float32(np.inf)), np.nextafter(near, np.float32(-np.inf)))
    return float(min(candidates, key=lambda v: (abs(Fraction(float(v)) - exact), int(v.view(np.int32)) & 1)))


@pytest.mark.parametrize("fmt", sorted(GROUPABLE) or NONE_GROUPED)
@settings(max_examples=6, deadline=None)
@given(blocks=st.integers(1, 5), rows=st.integers(1, 8), seed=st.integers(0, 2**32 - 1))
def test_grouped_decode_rows_are_the_documented_float_operations(fmt, blocks, rows, seed):
    """qgemm.h: per block acc = fma(float(dot_b - bias * sum(x_b)), d_b * dx_b, acc), Q4_1 then acc = fma(m_b, s_b,
    acc); emulated exactly (one rounding per fma) from the kernels' int8 activations. dot_b - bias * sum(x_b) is the
    integer dot of the codes' values (Q4_0's q - 8), whatever bias a kernel's instructions need."""
    rng = np.random.default_rng(seed)
    weight = random_weight(fmt, GROUP_ROWS, 32 * blocks, rng, float(rng.choice(MAGNITUDES[1:])))
    x = activations(rng, rows, 32 * blocks)
    q, dx, s, *_ = library.qgemm_quantize(x, blocks + blocks % 2)
    q = q.view(rows, -1, 32)[:, :blocks].long()
    dots = torch.einsum("tbk,nbk->tnb", q, weight.codes.long().view(GROUP_ROWS, blocks, 32))
    d32, m32 = weight.scale.numpy().astype(np.float32), weight.offset.numpy().astype(np.float32)
    expected = torch.zeros(rows, GROUP_ROWS)
    for t, i, b in np.ndindex(rows, GROUP_ROWS, blocks):
        acc = fma32(float(dots[t, i, b]), float(d32[i, b] * np.float32(dx[t, b])), float(expected[t, i]))
        expected[t, i] = fma32(float(m32[i, b]), float(s[t, b]), acc) if fmt is BlockFormat.Q4_1 else acc
    for isa in ISAS:
        assert torch.equal(BlockLinear(weight, isa, grouped=True)(x), expected), isa


@pytest.mark.parametrize("fmt", sorted(GROUPABLE) or NONE_GROUPED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_grouped_rows_result_does_not_depend_on_its_neighbours(fmt, dtype):
    rng = np.random.default_rng(11)
    weight = random_weight(fmt, 48, 160, rng, 0.05)
    x = activations(rng, 30, 160).to(dtype)
    for isa in ISAS:
        product = BlockLinear(weight, isa, grouped=True)
        assert product.grouped
        eight, many = product(x[:8]), product(x)
        assert eight.dtype == many.dtype == dtype
        for i in range(8):  # each activation row alone and as each of the group kernel's eight
            assert torch.equal(product(x[i : i + 1]), eight[i : i + 1]), (isa, i)
        assert torch.equal(product(x[2:7]), eight[2:7])
        assert torch.equal(product(x[5:]), many[5:]) and torch.equal(product(x[3:17]), many[3:17])


@pytest.mark.parametrize("fmt", list(FORMATS))
@SETTINGS
@given(
    parts=st.lists(st.tuples(st.sampled_from([16, 32, 48, 4, 12, 20]), st.booleans()), min_size=1, max_size=4),
    blocks=st.integers(1, 7),
    seed=st.integers(0, 2**32 - 1),
)
def test_concat_of_grouped_parts_is_one_product_of_the_stacked_weights(fmt, parts, blocks, seed):
    """Parts grouped or not (as asked: parts of 4, 12 or 20 rows cannot be), stacked: the stacked weights' product."""
    rng = np.random.default_rng(seed)
    k = 32 * blocks
    weights = [random_weight(fmt, n, k, rng, 0.1) for n, _ in parts]
    parts = [BlockLinear(w, grouped=asked) for w, (_, asked) in zip(weights, parts)]
    joined = BlockLinear.concat(parts)
    total = sum(p.out_features for p in parts)
    # BlockLinear.concat's rule: regrouped when the first part was grouped and the stacked rows still allow it
    assert joined.grouped == (parts[0].grouped and total % GROUP_ROWS == 0)
    assert joined.out_features == total and joined.nbytes == sum(p.nbytes for p in parts)
    whole = BlockLinear(stack(weights), grouped=joined.grouped)
    (kind, codes, scales), (whole_kind, whole_codes, whole_scales) = joined.native_kind(), whole.native_kind()
    assert kind == whole_kind and torch.equal(codes, whole_codes) and torch.equal(scales, whole_scales)
    for rows in (1, 5, 11):
        x = activations(rng, rows, k)
        assert torch.equal(joined(x), whole(x)), rows


def test_mis_shaped_grouped_weights_are_clear_errors_at_the_op_boundary():
    """What the shapes below cannot say: the messages name the disagreement; layout and dtype are checked too."""
    rng = np.random.default_rng(5)
    x = activations(rng, 2, 96)
    q8 = BlockLinear(random_weight(BlockFormat.Q8_0, 32, 96, rng, 1.0), grouped=False)
    cases = [] if BlockFormat.Q8_0 in GROUPABLE else [(q8.format, q8._codes, q8._scales.view(1, 2, 16, 4), "grouped")]
    for fmt in GROUPABLE:
        _, codes, scales = BlockLinear(random_weight(fmt, 32, 96, rng, 1.0), grouped=True).native_kind()
        cases += [
            (fmt, torch.cat([codes, codes[:16]]), scales, "scales for 32 rows, codes for 48"),
            (fmt, codes, scales.transpose(2, 3), "grouped"),  # not contiguous
            (fmt, codes, scales.float(), "float16"),
        ]
    for fmt, codes, scales, message in cases:
        with pytest.raises(RuntimeError, match=message):
            library.qgemm(x, codes, scales, int(fmt), -1)
    assert torch.isfinite(q8(x)).all()  # the library still multiplies after every refusal


FIELDS = ("none", "planes", "groups", "gp", "lanes", "n", "row_bytes", "k_blocks")


@settings(max_examples=80, deadline=None)
@given(
    fmt=st.sampled_from(list(FORMATS)),
    groups=st.integers(0, 2),
    pairs=st.integers(1, 3),
    full=st.booleans(),
    field=st.one_of(st.just("none"), st.sampled_from(FIELDS)),
    delta=st.integers(-3, 3).filter(bool),
    isa=st.sampled_from(ISAS or [Isa.SCALAR]),
)
def test_any_grouped_shapes_are_refused_or_well_formed(fmt, groups, pairs, full, field, delta, isa):
    """Hostile shapes at the op boundary (a well-formed grouped product with one dimension off, or none): a
    RuntimeError, or, when they are qgemm.h's grouped layout of a format BlockLinear groups, the right values."""
    gp, unit = 2 * pairs, 32 if fmt is BlockFormat.Q8_0 else 16  # a row's bytes per block
    dims = dict(planes=2 if fmt is BlockFormat.Q4_1 else 1, groups=groups, gp=gp, lanes=GROUP_ROWS)
    dims.update(n=groups * GROUP_ROWS, row_bytes=gp * unit, k_blocks=gp if full else gp - 1)
    if field != "none":
        dims[field] = max(dims[field] + delta, 0 if field != "k_blocks" else 1)
    planes, groups, gp, lanes, n, row_bytes, k_blocks = dims.values()
    codes = torch.full((n, row_bytes), 0x88, dtype=torch.uint8)
    scales = torch.full((planes, groups, gp, lanes), 0.5, dtype=torch.float16)
    expected = (1 + (fmt is BlockFormat.Q4_1), n, GROUP_ROWS, 0, gp * unit)
    layout = (planes, groups * GROUP_ROWS, lanes, gp % 2, row_bytes) == expected
    well_formed = fmt in GROUPABLE and layout and gp - 2 < k_blocks <= gp
    event("well formed" if well_formed else "one dimension off")
    try:
        y = library.qgemm(torch.ones(2, 32 * k_blocks), codes, scales, int(fmt), int(isa))
    except RuntimeError:
        assert not well_formed
        return
    assert well_formed, (fmt, n, scales.shape, row_bytes, k_blocks)
    # every byte 0x88, d = m = 0.5, x = 1 (padding blocks' activations are zero): Q8_0 w = 0.5 * -120, Q4_0 0.5 * (8 -
    # 8), Q4_1 0.5 * 8 + 0.5
    weight = {BlockFormat.Q8_0: -60.0, BlockFormat.Q4_0: 0.0, BlockFormat.Q4_1: 4.5}[fmt]
    assert y.shape == (2, n) and torch.allclose(y, torch.full_like(y, weight * 32 * k_blocks), rtol=1e-6), y


POOL_FORMATS = [q for fmt, (q, *_) in FORMATS.items() if fmt in GROUPABLE]


@pytest.mark.parametrize("qtype", POOL_FORMATS or NONE_GROUPED)
@pytest.mark.parametrize("rows", [1, 5, 11])
def test_the_pooled_loop_over_grouped_weights_is_the_op_loop(monkeypatch, qtype, rows):
    """decode_layers on the worker pool against the same loop over separate qgemm calls (AIOS_NATIVE_POOL=0), grouped
    weights (every product's rows are whole groups); decode rows give the same bits on every ISA, and prompt rows
    (> 8) the bits of weights apart. In float32: bfloat16 rounding would hide last-bit differences between orders."""
    from tests.engine.test_native_pool import make_step, reference, run_step

    monkeypatch.setenv("AIOS_QGEMM_GROUPED", "1")
    step = make_step(qtype, (8, 2, 32), rows, torch.float32, seed=rows + 40)
    assert all(s.dim() == 4 for s in step["weights"][1::2])  # every product grouped
    x_ref, kv_ref = reference(step, monkeypatch)
    assert not torch.equal(x_ref, step["x"]) and torch.isfinite(x_ref.float()).all()
    for threads in (1, 2, 3):
        x, kv = run_step(step, threads)
        assert torch.equal(x, x_ref) and torch.equal(kv, kv_ref), f"differs at {threads} threads"
    if rows <= 8:  # the group kernels: the same bits on every ISA (AIOS_QGEMM_ISA caps only the products)
        for isa in ISAS:
            monkeypatch.setenv("AIOS_QGEMM_ISA", isa.name.lower())
            x, kv = run_step(step, 2)
            assert torch.equal(x, x_ref) and torch.equal(kv, kv_ref), f"{isa.name} differs"
        return
    monkeypatch.setenv("AIOS_QGEMM_GROUPED", "0")  # the blocked product decodes both layouts into the same tiles
    apart = make_step(qtype, (8, 2, 32), rows, torch.float32, seed=rows + 40)
    assert all(s.dim() == 3 for s in apart["weights"][1::2])
    for threads in (1, 2):
        x, kv = run_step(apart, threads)
        assert torch.equal(x, x_ref) and torch.equal(kv, kv_ref), f"apart differs at {threads} threads"
