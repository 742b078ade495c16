"""The calculator as an MCP server: `calculate(expression)` with arithmetic.py's bounded evaluator.

Bounds (input length, nesting, integer sizes, exponents) are the evaluator's; an expression it refuses comes back as
a tool error with its message, fit to show the model.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from kernel.tools.servers.arithmetic import CalculatorError
from kernel.tools.servers.arithmetic import calculate as evaluate


def build() -> MCPServer:
    server = MCPServer("calculator", log_level="WARNING")

    @server.tool(structured_output=False)
    def calculate(expression: str) -> str:
        """Evaluate an arithmetic expression: numbers, + - * / // % ** (or ^) and parentheses."""
        try:
            return str(evaluate(expression))
        except CalculatorError as error:
            raise ToolError(str(error)) from None

    return server


def main() -> None:
    build().run()


if __name__ == "__main__":
    main()
