"""The files server: the calling agent's own file space (kernel/storage/ through the SDK's fs.* calls).

Tools: read_file, write_file, list_files, delete_file, search_files. Each takes a hidden `space` argument that the
tool manager fills with the caller's space (agents never see or set it). write_file and delete_file are listed as
irreversible in the default config. Text only: a file that is not UTF-8 is reported, not returned.
"""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from kernel.tools.servers import SPACE_FIELD
from kernel.tools.servers.kernel_link import KernelLink

Space = Annotated[str, Field(json_schema_extra=SPACE_FIELD)]


def build() -> MCPServer:
    server = MCPServer("files", log_level="WARNING")
    link = KernelLink("files")

    @server.tool(structured_output=False)
    def read_file(path: str, version: int | None = None, space: Space = "") -> str:
        """Read a text file of yours (its latest version, or the given one)."""
        data = link.run(lambda k: k.fs.read(path, version, space=space))
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ToolError(f"{path} is binary ({len(data)} bytes)") from None

    @server.tool(structured_output=False)
    def write_file(path: str, content: str, space: Space = "") -> str:
        """Write a text file of yours (a new version; earlier ones are kept)."""
        version = link.run(lambda k: k.fs.write(path, content, space=space))
        return f"wrote {path} version {version}"

    @server.tool(structured_output=False)
    def list_files(prefix: str = "", space: Space = "") -> str:
        """List your files under a path prefix: path, size in bytes, latest version."""
        files = link.run(lambda k: k.fs.list(prefix, space=space))
        return "\n".join(f"{info.path}\t{info.size}\tv{info.version}" for info in files) or "(no files)"

    @server.tool(structured_output=False)
    def delete_file(path: str, space: Space = "") -> str:
        """Delete a file of yours with all its versions."""
        link.run(lambda k: k.fs.delete(path, space=space))
        return f"deleted {path}"

    @server.tool(structured_output=False)
    def search_files(query: str, k: Annotated[int, Field(ge=1, le=20)] = 5, space: Space = "") -> str:
        """Find your text files by meaning: path and version of the closest ones."""
        hits = link.run(lambda kernel: kernel.fs.search(query, k, space=space))
        return (
            "\n".join(f"{hit.metadata.get('path')}\tv{hit.metadata.get('version')}\t{hit.score:.3f}" for hit in hits)
            or "(nothing found)"
        )

    return server


def main() -> None:
    build().run()


if __name__ == "__main__":
    main()
