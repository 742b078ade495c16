import pytest

from agents.calculator import CalculatorError, calculate


@pytest.mark.parametrize("expression, value", [("17 * 23 + 4", 395), ("2 ^ 10", 1024), ("-(3 - 5) / 4", 0.5),
                                               ("7 // 2 % 3", 0)])
def test_arithmetic(expression, value):
    assert calculate(expression) == value


@pytest.mark.parametrize("expression", ["__import__('os')", "1 / 0", "9 ** 99999", "x + 1", "1 +", "'a' * 3"])
def test_anything_else_is_refused(expression):
    with pytest.raises(CalculatorError):
        calculate(expression)
