"""The agent's memory (`k.memory`), files (`k.fs`) and tools (`k.tools`): thin views over the kernel's mem.*, fs.* and
tool.* syscalls, the same objects on both clients (on AsyncKernel each call returns an awaitable).

Each call acts on the agent's own space (kept across runs under its name) unless `space=` names another owner's
space that was shared with it (`k.share(...)`). Results are the protocol's typed records (ipc/service_messages.py).
"""

from __future__ import annotations

from ipc.service_messages import (
    FileInfo,
    FsList,
    FsPath,
    FsRollback,
    FsSearch,
    FsWrite,
    MemAdd,
    MemList,
    MemRecord,
    MemRef,
    MemSearch,
    MemUpdate,
    PendingApproval,
    PendingList,
    ToolApprove,
    ToolCallRequest,
    ToolInfo,
    ToolList,
    ToolOutput,
    VersionInfo,
)
from sdk.protocol import Request


class Memory:
    def __init__(self, run):
        self._run = run

    def add(self, text: str, metadata: dict | None = None, *, space: str | None = None) -> str:
        return self._run(Request("mem.add", MemAdd(text=text, metadata=metadata or {}, space=space), lambda r: r.id))

    def search(
        self, query: str, k: int = 5, filter: dict | None = None, *, space: str | None = None
    ) -> list[MemRecord]:
        return self._run(
            Request("mem.search", MemSearch(query=query, k=k, filter=filter, space=space), lambda r: r.records)
        )

    def get(self, id: str, *, space: str | None = None) -> MemRecord:
        return self._run(Request("mem.get", MemRef(id=id, space=space)))

    def update(self, id: str, text: str | None = None, metadata: dict | None = None, *, space: str | None = None):
        return self._run(
            Request("mem.update", MemUpdate(id=id, text=text, metadata=metadata, space=space), lambda r: None)
        )

    def delete(self, id: str, *, space: str | None = None) -> None:
        return self._run(Request("mem.delete", MemRef(id=id, space=space), lambda r: None))

    def list(self, offset: int = 0, limit: int = 100, *, space: str | None = None) -> list[MemRecord]:
        return self._run(Request("mem.list", MemList(offset=offset, limit=limit, space=space), lambda r: r.records))


class Files:
    def __init__(self, run):
        self._run = run

    def write(self, path: str, data: bytes | str, *, space: str | None = None) -> int:
        """The new version number (the last versions are kept)."""
        data = data.encode("utf-8") if isinstance(data, str) else data
        return self._run(Request("fs.write", FsWrite(path=path, data=data, space=space), lambda r: r.version))

    def read(self, path: str, version: int | None = None, *, space: str | None = None) -> bytes:
        return self._run(Request("fs.read", FsPath(path=path, version=version, space=space), lambda r: r.data))

    def list(self, prefix: str = "", *, space: str | None = None) -> list[FileInfo]:
        return self._run(Request("fs.list", FsList(prefix=prefix, space=space), lambda r: r.files))

    def delete(self, path: str, *, space: str | None = None) -> None:
        return self._run(Request("fs.delete", FsPath(path=path, space=space), lambda r: None))

    def versions(self, path: str, *, space: str | None = None) -> list[VersionInfo]:
        return self._run(Request("fs.versions", FsPath(path=path, space=space), lambda r: r.versions))

    def rollback(self, path: str, version: int, *, space: str | None = None) -> int:
        return self._run(
            Request("fs.rollback", FsRollback(path=path, version=version, space=space), lambda r: r.version)
        )

    def search(self, query: str, k: int = 5, *, space: str | None = None) -> list[MemRecord]:
        """Stored text files most like the query: each hit's metadata names its path and version."""
        return self._run(Request("fs.search", FsSearch(query=query, k=k, space=space), lambda r: r.records))


class Tools:
    def __init__(self, run):
        self._run = run

    def list(self) -> list[ToolInfo]:
        """The tools this agent may call, with their JSON schemas."""
        return self._run(Request("tool.list", ToolList(), lambda r: r.tools))

    def call(self, name: str, arguments: dict | None = None, *, timeout: float | None = None) -> ToolOutput:
        """Run a tool in its sandboxed MCP server. An irreversible tool's call waits for the operator's approval."""
        return self._run(Request("tool.call", ToolCallRequest(name=name, arguments=arguments or {})), timeout)

    def as_openai(self) -> list[dict]:
        """This agent's tools in the shape chat(tools=...) takes."""
        return self._run(
            Request(
                "tool.list",
                ToolList(),
                lambda r: [
                    {
                        "type": "function",
                        "function": {"name": t.name, "description": t.description, "parameters": t.input_schema},
                    }
                    for t in r.tools
                ],
            )
        )

    def pending(self) -> list[PendingApproval]:
        """Held calls of irreversible tools (the operator's view: needs tool.approve)."""
        return self._run(Request("tool.pending", PendingList(), lambda r: r.pending))

    def approve(self, approval_id: str, allow: bool = True) -> None:
        return self._run(Request("tool.approve", ToolApprove(approval_id=approval_id, allow=allow), lambda r: None))
