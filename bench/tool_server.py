"""The agentic mixes' slow tools as an MCP server the kernel runs: each call waits the trace's latency and answers.

    python -m bench.tool_server        (started by aiosd from bench/agentic_tools.toml, over stdio)

Tools: `api_request(seconds)` (an HTTP API: the trace's "api" gaps) and `run_tests(seconds)` (a test suite or a
sandboxed run: the "slow" gaps). The caller passes the latency the trace drew, so a run through the kernel waits what a
run with the agent's own sleep waits; the tools' names differ so that the kernel can learn each one's latency apart
(tool-aware retention keys its estimate by tool name). The trace's "calculator" gaps use the kernel's own calculator.
`lookup(key)` (python -m bench.early_tools) waits a fixed $BENCH_LOOKUP_S seconds (default 1): the model writes its
arguments, so the latency is not one of them; it is marked read-only (MCP readOnlyHint), so the kernel may start it as
the model writes the call, and its arguments object is closed (additionalProperties false) so a small model ends it.

Invariants: a call sleeps without holding the server's event loop (asyncio), so concurrent calls overlap; seconds
outside [0, MAX_SECONDS] are refused as a tool error before any wait.
"""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

MAX_SECONDS = 60.0  # past the trace's longest gap (8 s) with room; a bound on what one call can hold a slot


async def _wait(seconds: float) -> str:
    if not 0.0 <= seconds <= MAX_SECONDS:
        raise ToolError(f"seconds must be in [0, {MAX_SECONDS:g}], got {seconds!r}")
    await asyncio.sleep(seconds)
    return f"done after {seconds:.3f} s"


def build() -> MCPServer:
    server = MCPServer("bench-tools", log_level="WARNING")

    @server.tool(structured_output=False)
    async def api_request(seconds: float) -> str:
        """Call a remote API that answers after `seconds`."""
        return await _wait(seconds)

    @server.tool(structured_output=False)
    async def run_tests(seconds: float) -> str:
        """Run a test suite that takes `seconds`."""
        return await _wait(seconds)

    @server.tool(structured_output=False, annotations=ToolAnnotations(readOnlyHint=True))
    async def lookup(key: Annotated[str, Field(max_length=16)]) -> str:
        """Look a key up in the catalogue."""
        await asyncio.sleep(float(os.environ.get("BENCH_LOOKUP_S", "1")))
        return f"{key}: found"

    server._tool_manager.get_tool("lookup").parameters["additionalProperties"] = False
    return server


def main() -> None:
    build().run()


if __name__ == "__main__":
    main()
