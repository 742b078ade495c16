"""The tool gaps an agent spends between LLM calls: real arithmetic for the calculator, real sleeps for I/O tools.

run_tool(gap) runs a gap in the agent's own process (the baselines: no kernel, a llama.cpp server); kernel_call(gap)
names the kernel tool and arguments that run the same gap through aiosd's tool manager (bench/agentic_tools.toml: the
kernel's calculator and the sleeping tools of bench/tool_server.py).
"""

from __future__ import annotations

import ast
import operator
import time

from bench.trace import ToolGap

_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Mod: operator.mod,
    ast.FloorDiv: operator.floordiv,
    ast.USub: operator.neg,
}


def calculate(expression: str) -> int:
    """Evaluate integer arithmetic (+ - * % //, parentheses); anything else is a ValueError."""

    def evaluate(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](evaluate(node.left), evaluate(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](evaluate(node.operand))
        raise ValueError(f"not integer arithmetic: {ast.dump(node)}")

    try:
        return evaluate(ast.parse(expression, mode="eval").body)
    except (SyntaxError, ZeroDivisionError) as err:
        raise ValueError(f"cannot calculate {expression!r}: {err}") from err


# The kernel tool that runs each kind of gap; the sleeping ones take the trace's latency as an argument.
KERNEL_TOOLS = {"calculator": "calculate", "api": "api_request", "slow": "run_tests"}


def kernel_call(gap: ToolGap) -> tuple[str, dict]:
    """(tool name, arguments) of the kernel tool call that runs this gap."""
    if gap.kind == "calculator":
        return KERNEL_TOOLS["calculator"], {"expression": gap.expression}
    return KERNEL_TOOLS[gap.kind], {"seconds": gap.seconds}


def run_tool(gap: ToolGap) -> float:
    """Run one gap and return the seconds it took. Its result is not added to the next prompt: the trace fixes every
    prompt's length."""
    start = time.monotonic()
    if gap.kind == "calculator":
        calculate(gap.expression)
    else:
        time.sleep(gap.seconds)  # an API or a slow tool: the agent waits on I/O, the CPU is free for the kernel
    return time.monotonic() - start
