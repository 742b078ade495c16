"""A test MCP server whose tools misbehave on purpose: hang, crash, answer 100 MB, block until released, show its env.

Run as `python -m tests.tools.servers.misc`. `strict(n: int)` records every call that reaches it (`seen()` lists them):
the server's own validation is lax (pydantic turns "5" into 5), so a call with n="5" that reached it would be recorded;
only the manager's schema check keeps it out.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Annotated

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from kernel.tools.schema import CONTEXT_MARK


def build() -> MCPServer:
    server = MCPServer("misc", log_level="WARNING")
    seen: list = []
    gate = {"event": asyncio.Event(), "running": 0, "peak": 0}

    @server.tool(structured_output=False)
    def echo(
        text: str,
        space: Annotated[str, Field(json_schema_extra={CONTEXT_MARK: "space"})] = "",
        agent: Annotated[str, Field(json_schema_extra={CONTEXT_MARK: "agent_id"})] = "",
    ) -> str:
        return f"{text}|{space}|{agent}"

    @server.tool(structured_output=False)
    def strict(n: int) -> str:
        seen.append(n)
        return str(n)

    @server.tool(structured_output=False)
    def seen_calls() -> str:
        return json.dumps(seen)

    @server.tool(structured_output=False)
    async def hang() -> str:
        await asyncio.Event().wait()
        return "never"

    @server.tool(structured_output=False)
    def crash() -> str:
        os._exit(3)

    @server.tool(structured_output=False)
    def big(mb: int) -> str:
        return "x" * (mb * 1024 * 1024)

    @server.tool(structured_output=False)
    def info() -> str:
        return json.dumps({"pid": os.getpid(), "cwd": os.getcwd(), "env": dict(os.environ)})

    @server.tool(structured_output=False)
    async def block() -> str:
        gate["running"] += 1
        gate["peak"] = max(gate["peak"], gate["running"])
        await gate["event"].wait()
        gate["running"] -= 1
        return str(gate["peak"])

    @server.tool(structured_output=False)
    def release() -> str:
        gate["event"].set()
        return "released"

    return server


if __name__ == "__main__":
    build().run()
