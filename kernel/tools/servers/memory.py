"""The memory search server: `search_memory(query, k)` over the calling agent's memory (kernel/memory/ via mem.search).

The caller's space arrives as a hidden, kernel-injected `space` argument (see kernel/tools/schema.py). Each hit is one
line: score, text, and metadata as JSON.
"""

from __future__ import annotations

import json
from typing import Annotated

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from kernel.tools.servers import SPACE_FIELD
from kernel.tools.servers.kernel_link import KernelLink


def build() -> MCPServer:
    server = MCPServer("memory", log_level="WARNING")
    link = KernelLink("memory")

    @server.tool(structured_output=False)
    def search_memory(
        query: str,
        k: Annotated[int, Field(ge=1, le=20)] = 5,
        space: Annotated[str, Field(json_schema_extra=SPACE_FIELD)] = "",
    ) -> str:
        """Search your memory by meaning; the closest records first."""
        records = link.run(lambda kernel: kernel.memory.search(query, k, space=space))
        return (
            "\n".join(f"{record.score:.3f}\t{record.text}\t{json.dumps(record.metadata)}" for record in records)
            or "(nothing found)"
        )

    return server


def main() -> None:
    build().run()


if __name__ == "__main__":
    main()
