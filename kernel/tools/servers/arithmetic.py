"""The calculator tool's evaluator (calculator.py serves it): arithmetic on a parsed expression tree (never eval),
with bounds on the work it may do.

Contract: `calculate(expression)` returns an int or a finite float, or raises CalculatorError with a message fit to show
the model; nothing else escapes, whatever the text (model output is untrusted). The work is bounded before it is done:
- input: at most MAX_CHARS characters and MAX_DEPTH levels of nesting in the parsed tree;
- `**`: the exponent's magnitude is at most MAX_EXPONENT, and an integer power is refused when its size estimate
  (bits of the base x exponent) passes MAX_INT_BITS, so `((10**999)**999)**999` is refused without being computed;
- `*`: integer factors whose bit lengths add up past MAX_INT_BITS are refused before multiplying;
- every intermediate and final result: integers of at most MAX_INT_BITS bits (below CPython's 4300-digit limit on
  int -> str, so the caller can always print the result), floats finite (inf and nan are refused), nothing complex
  (`(-8) ** 0.5` would be complex in Python);
- ZeroDivisionError, OverflowError, ValueError, RecursionError and MemoryError from parsing or arithmetic become
  CalculatorError.
"""

from __future__ import annotations

import ast
import math
import operator

MAX_CHARS = 200
MAX_DEPTH = 100  # tree levels: a sum of 100 one-digit terms fits; ~199 unary signs do not
MAX_EXPONENT = 1000
MAX_INT_BITS = 4096  # ~1233 decimal digits: 2**1000 * 2**1000 works, and the result always prints

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class CalculatorError(ValueError):
    """The expression is not arithmetic, or its value cannot be computed within the bounds; the message says which."""


def calculate(expression: str) -> int | float:
    """Value of an arithmetic expression: numbers, + - * / // % ** (or ^), parentheses. CalculatorError otherwise."""
    if not isinstance(expression, str):
        raise CalculatorError(f"expression must be text, got {type(expression).__name__}")
    if len(expression) > MAX_CHARS:
        raise CalculatorError(f"expression longer than {MAX_CHARS} characters")
    try:
        tree = ast.parse(expression.strip().replace("^", "**"), mode="eval")
    except (SyntaxError, ValueError):
        raise CalculatorError(f"not an arithmetic expression: {expression!r}") from None
    except (RecursionError, MemoryError):  # the parser's own nesting limits
        raise CalculatorError(f"expression nested too deeply: {expression!r}") from None
    try:
        return _evaluate(tree.body, depth=0)
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except OverflowError:  # float range, or an int too large to convert to float
        raise CalculatorError("number too large for a float") from None
    except (ValueError, ArithmeticError) as error:  # CalculatorError is a ValueError: keep its message
        if isinstance(error, CalculatorError):
            raise
        raise CalculatorError(f"cannot compute: {error}") from None
    except (RecursionError, MemoryError):  # MAX_DEPTH should prevent these; never let them end the agent
        raise CalculatorError("expression too complex") from None


def _evaluate(node: ast.AST, depth: int) -> int | float:
    if depth > MAX_DEPTH:
        raise CalculatorError(f"expression nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):  # type(): bool and complex excluded
        return _checked(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_evaluate(node.operand, depth + 1)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left, depth + 1), _evaluate(node.right, depth + 1)
        _check_cost(node.op, left, right)
        return _checked(_BINARY[type(node.op)](left, right))
    raise CalculatorError(f"unsupported syntax: {ast.dump(node)[:60]}")


def _check_cost(op: ast.operator, left: int | float, right: int | float) -> None:
    """Refuse, before computing, an operation whose result would pass the bounds (the only costly ones: ** and *)."""
    if isinstance(op, ast.Pow):
        if abs(right) > MAX_EXPONENT:
            raise CalculatorError(f"exponent above {MAX_EXPONENT}")
        # An int power grows to about bits(base) * exponent bits; float powers are bounded by the float range.
        if isinstance(left, int) and isinstance(right, int) and right > 0 and left.bit_length() * right > MAX_INT_BITS:
            raise CalculatorError(f"result larger than {MAX_INT_BITS} bits")
    elif isinstance(op, ast.Mult) and isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
            raise CalculatorError(f"result larger than {MAX_INT_BITS} bits")


def _checked(value: object) -> int | float:
    """The value if it is a real number within the bounds; CalculatorError naming what is wrong otherwise."""
    if type(value) is int:
        if value.bit_length() > MAX_INT_BITS:
            raise CalculatorError(f"result larger than {MAX_INT_BITS} bits")
        return value
    if type(value) is float:
        if not math.isfinite(value):
            raise CalculatorError("result too large" if math.isinf(value) else "result is not a number")
        return value
    raise CalculatorError("no real-valued result")  # complex, e.g. a negative number to a fractional power
