"""A test MCP server whose tools record every invocation in a file and then sleep: what the early-start tests count.

Run as `python -m tests.tools.servers.recorder` with RECORD_FILE (the file; one JSON line per invocation, written
before the sleep) and RECORD_SLEEP_S (seconds each call sleeps, default 1). Every invocation gets a fresh run id,
recorded and returned, so a caller can tell which run answered it. Argument objects are closed
(additionalProperties false).

- lookup(key): read-only (MCP readOnlyHint): may be started early;
- store(key): no annotation (may write): never started early;
- run_python(key): read-only, but the kernel restricts tools of this name (tool:run_python needed).
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from typing import Annotated

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations
from pydantic import Field

Key = Annotated[str, Field(max_length=12)]  # bounded: the model's constrained argument ends well within max_tokens
READ_ONLY = ToolAnnotations(readOnlyHint=True)


async def _record(tool: str, key: str) -> str:
    run = uuid.uuid4().hex
    with open(os.environ["RECORD_FILE"], "a") as out:
        out.write(json.dumps({"tool": tool, "key": key, "run": run}) + "\n")
    await asyncio.sleep(float(os.environ.get("RECORD_SLEEP_S", "1")))
    return run


def build() -> MCPServer:
    server = MCPServer("recorder", log_level="WARNING")

    @server.tool(structured_output=False, annotations=READ_ONLY)
    async def lookup(key: Key) -> str:
        """Look a key up in the catalogue."""
        return await _record("lookup", key)

    @server.tool(structured_output=False)
    async def store(key: Key) -> str:
        """Store a key in the catalogue."""
        return await _record("store", key)

    @server.tool(structured_output=False, annotations=READ_ONLY)
    async def run_python(key: Key) -> str:
        """Evaluate a key."""
        return await _record("run_python", key)

    # Closed argument objects: a small model offered a schema open to extra properties may write them forever.
    for name in ("lookup", "store", "run_python"):
        server._tool_manager.get_tool(name).parameters["additionalProperties"] = False
    return server


if __name__ == "__main__":
    build().run()
