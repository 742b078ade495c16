"""Quantized weights without a model: GGUF block decoding, the quantizers, and the packed int4/int8 products against
a float reference on random matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize

from kernel.engine.cpu.linear import packing_available
from kernel.engine.cpu.quant_embedding import QuantizedEmbedding
from kernel.engine.cpu.quant_linear import Int4Linear, Int8Linear
from kernel.engine.cpu.quant_weights import as_int4, as_int8_rows, build_product, lm_head_mode
from kernel.engine.loading.gguf_names import unpermute_rotary_rows
from kernel.engine.loading.quant_tensor import (
    GroupQuantized,
    concat_rows,
    from_q4_0,
    from_q4_1,
    from_q8_0,
    quantize_int4,
    quantize_int8_rows,
)

DECODERS = {
    GGMLQuantizationType.Q4_0: from_q4_0,
    GGMLQuantizationType.Q4_1: from_q4_1,
    GGMLQuantizationType.Q8_0: from_q8_0,
}


def _weights(n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # A per-row spread of magnitudes, and one constant group, like real layers have.
    w = rng.standard_normal((n, k)).astype(np.float32) * rng.uniform(0.01, 0.2, (n, 1)).astype(np.float32)
    w[0, :32] = 0.125
    return w


def _relative_error(y: torch.Tensor, reference: torch.Tensor) -> float:
    return float((y.float() - reference).abs().max() / reference.abs().max())


@pytest.mark.parametrize("qtype", list(DECODERS))
def test_gguf_blocks_decode_exactly_as_gguf_dequantizes(qtype):
    raw = quantize(_weights(48, 96, 1), qtype)
    ours = DECODERS[qtype](raw)
    assert ours.shape == (48, 96) and ours.codes.dtype == torch.int8
    assert np.array_equal(ours.dequantize().numpy(), dequantize(raw, qtype).reshape(48, 96))
    assert int(ours.codes.min()) >= ours.low and int(ours.codes.max()) <= ours.low + 2**ours.bits - 1


@pytest.mark.parametrize("qtype", [GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q4_1])
def test_int4_product_of_gguf_codes_matches_the_dequantized_matrix(qtype):
    raw = quantize(_weights(96, 128, 2), qtype)
    weight = DECODERS[qtype](raw)
    assert as_int4(weight) is weight  # mapped as stored, not requantized
    x = torch.randn(5, 128)
    reference = F.linear(x, torch.from_numpy(dequantize(raw, qtype).reshape(96, 128)))
    # bf16 activations and bf16 scales/zeros: a few parts in a thousand of the output's range
    assert _relative_error(Int4Linear(weight)(x), reference) < 2e-2
    assert Int4Linear(weight)(x).dtype == torch.float32 and Int4Linear(weight)(x.bfloat16()).dtype == torch.bfloat16


def test_int4_product_matches_its_dequantized_reference_for_any_rows():
    weight = quantize_int4(torch.from_numpy(_weights(64, 256, 3)))
    linear = Int4Linear(weight)
    x = torch.randn(9, 256).bfloat16()
    reference = F.linear(x.float(), weight.dequantize())
    assert _relative_error(linear(x), reference) < 2e-2
    # a row's result does not depend on the other rows of the batch
    assert torch.equal(linear(x[3:4]), linear(x)[3:4])


def test_int8_product_matches_its_dequantized_reference():
    weight = quantize_int8_rows(torch.from_numpy(_weights(80, 192, 4)))
    x = torch.randn(6, 192)
    assert _relative_error(Int8Linear(weight)(x), F.linear(x, weight.dequantize())) < 2e-2


def test_quantizers_stay_within_half_a_step():
    w = torch.from_numpy(_weights(32, 128, 5))
    four = quantize_int4(w)
    step = four.scale.repeat_interleave(32, dim=1)
    assert bool(((four.dequantize() - w).abs() <= step / 2 + 1e-6).all())
    assert torch.equal(four.dequantize()[0, :32], w[0, :32])  # the constant group comes back exactly
    eight = quantize_int8_rows(w)
    assert bool(((eight.dequantize() - w).abs() <= eight.scale / 2 + 1e-6).all())


def test_q8_0_becomes_per_row_int8_and_int4_by_requantizing():
    raw = quantize(_weights(32, 64, 6), GGMLQuantizationType.Q8_0)
    q8 = from_q8_0(raw)
    rows = as_int8_rows(q8)
    assert rows.group == 64 and rows.scale.shape == (32, 1)
    assert float((rows.dequantize() - q8.dequantize()).abs().max()) <= float(rows.scale.max()) / 2 + 1e-6
    assert as_int4(q8).bits == 4 and as_int4(q8).group == 32
    assert lm_head_mode("int4", q8) == "int8" and lm_head_mode("int4", as_int4(q8)) == "int4"
    assert lm_head_mode("bf16", q8) == "bf16"
    # bfloat16 activations with oneDNN's bfloat16 product: the head is bfloat16 in the int modes, faster than int8
    expected = "bf16" if packing_available() else "int8"
    assert lm_head_mode("int4", q8, torch.bfloat16) == expected and lm_head_mode("int8", q8, torch.bfloat16) in (
        "bf16",
        "int8",
    )
    assert lm_head_mode("int4", q8, torch.float32) == "int8"


def test_row_unpermute_moves_codes_and_scales_together():
    raw = quantize(_weights(64, 64, 7), GGMLQuantizationType.Q4_1)
    weight = from_q4_1(raw)
    permuted = weight.permute_rows(lambda a: unpermute_rotary_rows(a, 4))
    assert torch.equal(permuted.dequantize(), torch.from_numpy(unpermute_rotary_rows(weight.dequantize().numpy(), 4)))


def test_fused_product_equals_the_separate_products():
    parts = [from_q4_1(quantize(_weights(n, 64, 8 + n), GGMLQuantizationType.Q4_1)) for n in (64, 32, 32)]
    fused = build_product(parts, "int4")
    x = torch.randn(3, 64).bfloat16()
    separate = torch.cat([build_product([p], "int4")(x) for p in parts], dim=-1)  # the same mode's product,
    assert torch.equal(fused(x), separate)  # whichever kernel serves it (GGUF blocks: BlockLinear)
    with pytest.raises(ValueError):
        concat_rows([parts[0], quantize_int8_rows(parts[1].dequantize())])


def test_embedding_dequantizes_only_the_rows_looked_up():
    table = from_q8_0(quantize(_weights(100, 64, 9), GGMLQuantizationType.Q8_0))
    embedding = QuantizedEmbedding(table, torch.bfloat16)
    ids = torch.tensor([5, 99, 5, 0])
    rows = embedding[ids]
    assert rows.shape == (4, 64) and rows.dtype == torch.bfloat16
    assert torch.equal(rows, table.dequantize()[ids].bfloat16())


def test_kernels_refuse_layouts_they_cannot_read():
    with pytest.raises(ValueError):
        Int4Linear(quantize_int8_rows(torch.randn(8, 64)))
    with pytest.raises(ValueError):
        Int8Linear(quantize_int4(torch.randn(8, 64)))
    odd = GroupQuantized(torch.zeros(4, 64, dtype=torch.int8), torch.ones(4, 1), torch.zeros(4, 1), 64, 4, 0)
    with pytest.raises(ValueError):
        Int4Linear(odd)
