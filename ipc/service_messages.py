"""Syscalls of the kernel's services: memory (mem.*), files (fs.*), and sharing a space with another agent.

A space is an owner's private namespace, named "<principal>/<agent name>" (e.g. "uid:1000/notes"): the same agent run
again gets the same space back. Every call acts on the caller's own space unless `space` names another one, which
needs a share from its owner (access.share) or the operator's capability. Sizes are bounded here; the services bound
the rest (entries, bytes and files per space).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ipc.schema import bounded

MAX_SPACE_CHARS = 160
MAX_MEMORY_CHARS = 32_768  # one memory's text
MAX_QUERY_CHARS = 4_096
MAX_K = 100
MAX_PATH_CHARS = 1_024
MAX_FILE_BYTES = 2 << 20  # one fs.write: files are small documents, not bulk data (the frame limit is 4 MiB)
MAX_LIST = 1_000


# ---- memory ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class MemAdd:
    text: str = bounded(max_len=MAX_MEMORY_CHARS)
    metadata: dict = field(default_factory=dict)
    space: str | None = bounded(None, max_len=MAX_SPACE_CHARS, printable=True)


@dataclass(frozen=True, kw_only=True)
class MemSearch:
    query: str = bounded(max_len=MAX_QUERY_CHARS)
    k: int = bounded(5, lo=1, hi=MAX_K)
    filter: dict | None = None  # exact match on metadata keys
    space: str | None = bounded(None, max_len=MAX_SPACE_CHARS, printable=True)


@dataclass(frozen=True, kw_only=True)
class MemRef:
    """mem.get and mem.delete."""

    id: str = bounded(max_len=64)
    space: str | None = bounded(None, max_len=MAX_SPACE_CHARS, printable=True)


@dataclass(frozen=True, kw_only=True)
class MemUpdate:
    id: str = bounded(max_len=64)
    text: str | None = bounded(None, max_len=MAX_MEMORY_CHARS)
    metadata: dict | None = None
    space: str | None = bounded(None, max_len=MAX_SPACE_CHARS, printable=True)


@dataclass(frozen=True, kw_only=True)
class MemList:
    offset: int = bounded(0, lo=0, hi=1 << 40)
    limit: int = bounded(100, lo=1, hi=MAX_LIST)
    space: str | None = bounded(None, max_len=MAX_SPACE_CHARS, printable=True)


@dataclass(frozen=True, kw_only=True)
class MemId:
    id: str


@dataclass(frozen=True, kw_only=True)
class MemRecord:
    id: str
    text: str
    metadata: dict
    score: float | None = None  # set by search: cosine similarity


@dataclass(frozen=True, kw_only=True)
class MemRecords:
    records: list[MemRecord]


# ---- files ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class FsWrite:
    path: str = bounded(max_len=MAX_PATH_CHARS)
    data: bytes = bounded(max_len=MAX_FILE_BYTES)
    space: str | None = bounded(None, max_len=MAX_SPACE_CHARS, printable=True)


@dataclass(frozen=True, kw_only=True)
class FsPath:
    """fs.read (version None: the latest), fs.delete, fs.versions."""

    path: str = bounded(max_len=MAX_PATH_CHARS)
    version: int | None = bounded(None, lo=1, hi=1 << 62)
    space: str | None = bounded(None, max_len=MAX_SPACE_CHARS, printable=True)


@dataclass(frozen=True, kw_only=True)
class FsRollback:
    path: str = bounded(max_len=MAX_PATH_CHARS)
    version: int = bounded(lo=1, hi=1 << 62)
    space: str | None = bounded(None, max_len=MAX_SPACE_CHARS, printable=True)


@dataclass(frozen=True, kw_only=True)
class FsList:
    prefix: str = bounded("", max_len=MAX_PATH_CHARS)
    space: str | None = bounded(None, max_len=MAX_SPACE_CHARS, printable=True)


@dataclass(frozen=True, kw_only=True)
class FsSearch:
    query: str = bounded(max_len=MAX_QUERY_CHARS)
    k: int = bounded(5, lo=1, hi=MAX_K)
    space: str | None = bounded(None, max_len=MAX_SPACE_CHARS, printable=True)


@dataclass(frozen=True, kw_only=True)
class FsVersion:
    version: int


@dataclass(frozen=True, kw_only=True)
class FsData:
    data: bytes
    version: int


@dataclass(frozen=True, kw_only=True)
class FileInfo:
    path: str
    size: int
    version: int
    modified: float  # seconds since the epoch


@dataclass(frozen=True, kw_only=True)
class FsListing:
    files: list[FileInfo]


@dataclass(frozen=True, kw_only=True)
class VersionInfo:
    version: int
    size: int
    modified: float


@dataclass(frozen=True, kw_only=True)
class FsVersions:
    versions: list[VersionInfo]


# ---- sharing --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Share:
    """Grant (mode "r" or "rw") or revoke (mode "none") another owner's access to the caller's memory space or to a
    path prefix of its file space. grantee: an owner name "<principal>/<agent name>", or an agent name of the
    caller's own principal."""

    kind: Literal["mem", "fs"]
    grantee: str = bounded(max_len=MAX_SPACE_CHARS, printable=True)
    mode: Literal["r", "rw", "none"] = "r"
    prefix: str = bounded("", max_len=MAX_PATH_CHARS)


# ---- tools ----------------------------------------------------------------------------------------------------------
MAX_TOOL_NAME = 64


@dataclass(frozen=True, kw_only=True)
class ToolList:
    pass


@dataclass(frozen=True, kw_only=True)
class ToolInfo:
    name: str
    description: str
    input_schema: dict
    irreversible: bool = False  # a call waits for the operator's approval (aios approve ID) or a policy


@dataclass(frozen=True, kw_only=True)
class ToolListing:
    tools: list[ToolInfo]


@dataclass(frozen=True, kw_only=True)
class ToolCallRequest:
    name: str = bounded(max_len=MAX_TOOL_NAME, printable=True)
    arguments: dict = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ToolOutput:
    text: str
    is_error: bool = False  # the tool ran and reported an error
    truncated: bool = False  # cut at the kernel's output limit


@dataclass(frozen=True, kw_only=True)
class ToolApprove:
    """The operator's decision on a held call of an irreversible tool."""

    approval_id: str = bounded(max_len=64)
    allow: bool


@dataclass(frozen=True, kw_only=True)
class PendingList:
    pass


@dataclass(frozen=True, kw_only=True)
class PendingApproval:
    approval_id: str
    agent_id: str
    agent_name: str
    tool: str
    arguments: str  # every argument as name=value, each value cut short (built when held)
    waiting_s: float


@dataclass(frozen=True, kw_only=True)
class PendingApprovals:
    pending: list[PendingApproval]
