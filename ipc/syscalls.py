"""The syscall table: every syscall of the protocol declared once, and everything the kernel needs to know about it.

A row (Syscall) says what a syscall is called, its family, its body and result types (the codec decodes and checks
bodies by them), the capability a caller needs to make it at all (None: any agent after hello), whether it changes
state beyond the caller's own calls (`writes`: a space's content, another agent, a token, a share — in another
owner's space it needs a share for writing), whether it is open before hello, and which worker runs it. Everything
else reads this table and declares nothing of its own: the codec (SYSCALLS), the I/O thread's routing (the LLM family
passes through the preprocessor, so a connection's calls and cancels stay in order), the preprocessor (what it
tokenizes: Worker.PREPROCESSOR), the kernel loop's door (kernel/daemon/dispatch.py: hello first unless `open`, the
capability checked and a refusal audited once) and the handler maps of the daemon and the services, which must name
exactly these syscalls (a handler for a syscall not in the table is refused when the dispatcher is built).

Capabilities that depend on a call's arguments (whose agent, whose space, which tool, which capabilities granted) are
not in the table: the handler decides them, through kernel/access/gate.py, so every decision is audited one way.

Invariants: names are unique; a syscall the I/O thread routes to the preprocessor is answered by the loop after it;
`open` syscalls need no capability (nobody holds one before hello).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ipc.capabilities import Capability
from ipc.messages import (
    Ack,
    Cancel,
    Chat,
    Completion,
    Generate,
    Grant,
    GrantResult,
    Hello,
    HelloResult,
    KernelMetrics,
    KernelStats,
    KernelTop,
    Metrics,
    Ping,
    ProcKill,
    ProcList,
    ProcTable,
    SetPriority,
    Stats,
    Top,
)
from ipc.service_messages import (
    FsData,
    FsList,
    FsListing,
    FsPath,
    FsRollback,
    FsSearch,
    FsVersion,
    FsVersions,
    FsWrite,
    MemAdd,
    MemId,
    MemList,
    MemRecord,
    MemRecords,
    MemRef,
    MemSearch,
    MemUpdate,
    PendingApprovals,
    PendingList,
    Share,
    ToolApprove,
    ToolCallRequest,
    ToolList,
    ToolListing,
    ToolOutput,
)


class Family(enum.Enum):
    SESSION = "session"  # hello
    LLM = "llm"
    PROC = "proc"
    ACCESS = "access"
    MEM = "mem"
    FS = "fs"
    TOOL = "tool"
    KERNEL = "kernel"


class Worker(enum.Enum):
    """Which thread does a syscall's work (every syscall is authorized on the kernel loop first)."""

    LOOP = "loop"  # answered on the kernel loop
    PREPROCESSOR = "preprocessor"  # tokenized on the preprocessor thread, then scheduled by the loop
    MEMORY = "memory"  # the memory service's worker (kernel/services/worker.py)
    STORAGE = "storage"  # the file service's worker
    TOOLS = "tools"  # the tool manager's threads (kernel/tools/), answered through the tool reply worker


@dataclass(frozen=True)
class Syscall:
    name: str
    family: Family
    body: type
    result: type
    capability: Capability | None = None  # needed to make the call at all; None: any agent after hello
    writes: bool = False  # changes state beyond the caller's own calls
    open: bool = False  # allowed before hello
    worker: Worker = Worker.LOOP


_S, _F, _W, _C = Syscall, Family, Worker, Capability
TABLE: tuple[Syscall, ...] = (
    _S("hello", _F.SESSION, Hello, HelloResult, open=True),
    _S("llm.generate", _F.LLM, Generate, Completion, worker=_W.PREPROCESSOR),
    _S("llm.chat", _F.LLM, Chat, Completion, worker=_W.PREPROCESSOR),
    _S("llm.cancel", _F.LLM, Cancel, Ack),
    _S("proc.list", _F.PROC, ProcList, ProcTable),  # everyone's agents with proc.view, one's own without
    _S("proc.kill", _F.PROC, ProcKill, Ack, writes=True),  # another principal's agent: proc.kill (the handler)
    _S("proc.set_priority", _F.PROC, SetPriority, Ack, writes=True),  # ... proc.renice
    _S("access.grant", _F.ACCESS, Grant, GrantResult, _C.GRANT, writes=True),
    _S("access.share", _F.ACCESS, Share, Ack, writes=True),
    _S("mem.add", _F.MEM, MemAdd, MemId, writes=True, worker=_W.MEMORY),
    _S("mem.search", _F.MEM, MemSearch, MemRecords, worker=_W.MEMORY),
    _S("mem.get", _F.MEM, MemRef, MemRecord, worker=_W.MEMORY),
    _S("mem.update", _F.MEM, MemUpdate, Ack, writes=True, worker=_W.MEMORY),
    _S("mem.delete", _F.MEM, MemRef, Ack, writes=True, worker=_W.MEMORY),
    _S("mem.list", _F.MEM, MemList, MemRecords, worker=_W.MEMORY),
    _S("fs.write", _F.FS, FsWrite, FsVersion, writes=True, worker=_W.STORAGE),
    _S("fs.read", _F.FS, FsPath, FsData, worker=_W.STORAGE),
    _S("fs.list", _F.FS, FsList, FsListing, worker=_W.STORAGE),
    _S("fs.delete", _F.FS, FsPath, Ack, writes=True, worker=_W.STORAGE),
    _S("fs.versions", _F.FS, FsPath, FsVersions, worker=_W.STORAGE),
    _S("fs.rollback", _F.FS, FsRollback, FsVersion, writes=True, worker=_W.STORAGE),
    _S("fs.search", _F.FS, FsSearch, MemRecords, worker=_W.MEMORY),  # the file index lives in the memory service
    _S("tool.list", _F.TOOL, ToolList, ToolListing),
    _S("tool.call", _F.TOOL, ToolCallRequest, ToolOutput, worker=_W.TOOLS),  # a tool's own effects: its spec's
    _S("tool.approve", _F.TOOL, ToolApprove, Ack, _C.TOOL_APPROVE, writes=True),
    _S("tool.pending", _F.TOOL, PendingList, PendingApprovals, _C.TOOL_APPROVE),
    _S("kernel.stats", _F.KERNEL, Stats, KernelStats),
    _S("kernel.top", _F.KERNEL, Top, KernelTop, _C.PROC_VIEW),
    _S("kernel.metrics", _F.KERNEL, Metrics, KernelMetrics, _C.PROC_VIEW),
    _S("kernel.ping", _F.KERNEL, Ping, Ack, open=True),
)

BY_NAME: Mapping[str, Syscall] = MappingProxyType({s.name: s for s in TABLE})
# what the codec reads: name → (body type, result type)
SYSCALLS: Mapping[str, tuple[type, type]] = MappingProxyType({s.name: (s.body, s.result) for s in TABLE})
# the I/O thread hands these to the preprocessor: the LLM family, so a call's cancel never overtakes it
PREPROCESSED: frozenset[str] = frozenset(s.name for s in TABLE if s.family is Family.LLM)
TOKENIZED: frozenset[str] = frozenset(s.name for s in TABLE if s.worker is Worker.PREPROCESSOR)


def _check(table: tuple[Syscall, ...]) -> None:
    """The invariants above, at import: a malformed table never starts a kernel."""
    names = [s.name for s in table]
    if len(set(names)) != len(names):
        raise ValueError(f"syscall names repeat: {sorted(n for n in names if names.count(n) > 1)}")
    for s in table:
        if s.open and s.capability is not None:
            raise ValueError(f"{s.name} is open before hello but needs {s.capability.value}")
        if s.worker is Worker.PREPROCESSOR and s.family is not Family.LLM:
            raise ValueError(f"{s.name} is tokenized but not routed through the preprocessor")


_check(TABLE)
