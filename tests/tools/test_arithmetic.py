"""The calculator tool: arithmetic works, and whatever the model writes, the answer is a number or a CalculatorError.

No kernel needed. The property tests check the contract only (a value or CalculatorError); they assert no timing, but
they finish fast because every operation is bounded before it runs.
"""

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel.tools.servers.arithmetic import MAX_CHARS, MAX_DEPTH, MAX_INT_BITS, CalculatorError, calculate


@pytest.mark.parametrize(
    "expression, value",
    [
        ("17 * 23 + 4", 395),
        ("2 ^ 10", 1024),
        ("-(3 - 5) / 4", 0.5),
        ("7 // 2 % 3", 0),
        ("2 ** 1000 * 2 ** 1000", 2**2000),
        ("10 ** -3", 0.001),
        ("1e308 / 10", 1e307),
        ("-" * 40 + "1", 1),
        ("(" * 99 + "1" + ")" * 99, 1),
        ("+".join(["1"] * 100), 100),
    ],
    ids=str,
)
def test_arithmetic(expression, value):
    assert calculate(expression) == value


@pytest.mark.parametrize(
    "expression",
    ["__import__('os')", "x + 1", "1 +", "'a' * 3", "True + 1", "1j", "[1]", "\x00", "1 if 1 else 2", "(1).real"],
)
def test_anything_but_arithmetic_is_refused(expression):
    with pytest.raises(CalculatorError):
        calculate(expression)


@pytest.mark.parametrize(
    "expression, message",
    [
        ("1 / 0", "division by zero"),
        ("1 % 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("9 ** 99999", "exponent above"),
        ("((10**999)**999)**999", "bits"),  # refused from the size estimate, before computing
        ("(10**999)**999", "bits"),
        ("7 ** 1000 * 7 ** 1000", "bits"),  # factors checked before multiplying
        ("10.0 ** 999", "too large"),  # OverflowError in Python
        ("1e308 * 10", "too large"),  # inf in Python, no exception
        ("1e999", "too large"),  # an infinite literal
        ("1e308 * 10 - 1e308 * 10", "too large"),
        ("(10 ** 400) / 3", "too large"),  # int too large to convert to float
        ("(10 ** 400) ** -1", "too large"),
        ("(-8) ** 0.5", "real"),  # complex in Python
        ("1" * (MAX_CHARS + 1), "longer than"),
        ("-" * (MAX_DEPTH + 5) + "1", "nested"),
        ("+-" * 60 + "1", "nested"),
    ],
)
def test_numeric_failures_are_calculator_errors_with_clear_messages(expression, message):
    with pytest.raises(CalculatorError, match=message):
        calculate(expression)


def test_non_text_is_refused():
    with pytest.raises(CalculatorError, match="text"):
        calculate(None)


def _check_contract(expression: str) -> None:
    try:
        value = calculate(expression)
    except CalculatorError as error:
        assert str(error)  # a message to show the model
        return
    assert type(value) in (int, float)
    if type(value) is float:
        assert math.isfinite(value)
    else:
        assert value.bit_length() <= MAX_INT_BITS
        str(value)  # printable: below CPython's int -> str digit limit


# Numbers of every size the grammar allows, including ones that overflow floats or pass the integer bound once raised.
_numbers = st.one_of(
    st.integers(min_value=0, max_value=10**40).map(str),
    st.sampled_from(
        [
            "0",
            "1",
            "2",
            "9",
            "10",
            "999",
            "1000",
            "1001",
            "0.5",
            "1e308",
            "1e-308",
            "10.0",
            "1e999",
            "0.0",
            "4096",
            "65536",
            "1_000",
        ]
    ),
    st.floats(min_value=0, allow_nan=False, allow_infinity=False).map(repr),
)
_operators = st.sampled_from(["+", "-", "*", "/", "//", "%", "**", "^"])


def _combine(children):
    binary = st.tuples(children, _operators, children).map(lambda t: f"({t[0]} {t[1]} {t[2]})")
    unary = st.tuples(st.sampled_from(["-", "+"]), children).map(lambda t: f"{t[0]}{t[1]}")
    return binary | unary


_expressions = st.recursive(_numbers, _combine, max_leaves=12)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_expressions)
def test_generated_arithmetic_gives_a_number_or_a_calculator_error(expression):
    _check_contract(expression)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(max_size=2 * MAX_CHARS), st.text(alphabet="0123456789.eEjx_+-*/%^() \t\n", max_size=MAX_CHARS + 10)
    )
)
def test_arbitrary_text_gives_a_number_or_a_calculator_error(text):
    _check_contract(text)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["(", ")", "-", "+", "2", "**", "9", "*", "~", "1e9"]), max_size=120))
def test_deeply_nested_text_gives_a_number_or_a_calculator_error(tokens):
    _check_contract("".join(tokens))
