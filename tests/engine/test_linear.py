"""Products with prepacked weights agree with F.linear for any number of rows."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kernel.engine.cpu.linear import Linear


@pytest.mark.parametrize("rows", [1, 3, 8, 40])
def test_bfloat16_matches_f_linear(rows):
    torch.manual_seed(rows)
    weight, x = torch.randn(96, 64).bfloat16(), torch.randn(rows, 64).bfloat16()
    result = Linear(weight)(x)
    assert result.shape == (rows, 96) and result.dtype == torch.bfloat16
    torch.testing.assert_close(result, F.linear(x, weight))  # bfloat16 tolerance: summation order may differ


def test_float32_is_f_linear_exactly():
    weight, x = torch.randn(96, 64), torch.randn(5, 64)
    assert torch.equal(Linear(weight)(x), F.linear(x, weight))


def test_nbytes_counts_the_unpacked_weight():
    assert Linear(torch.zeros(96, 64, dtype=torch.bfloat16)).nbytes == 96 * 64 * 2
