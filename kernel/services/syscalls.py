"""mem.*, fs.* and access.share: a handler per syscall, run on the kernel loop's thread, which decides the space a
call acts on and queues the work on the service worker the syscall table names (ipc/syscalls.py: memory, or storage;
fs.search runs on the memory worker, where the file index lives). Whether a call writes is the table's too.

Which space a call acts on: the caller's own ("<principal>/<agent name>", or a throwaway one for an ephemeral agent)
unless `space` names another owner's, which needs that owner's share (access.share) for the access asked (read, or
write) or the operator's capability (mem.any, fs.any). A listing through a share matches its prefix by whole path
components, so a share of "notes" never lists "notes-private/...". Denials answer `permission_denied`; they and uses
of the capability are audited through kernel/access/gate.py. The loop only checks and queues; the work and the reply
happen on the worker.

Ephemeral agents' spaces are "eph:<boot>/<principal digest>/<agent id>": <boot> is random, made once per
ServiceSyscalls (one kernel lifetime), so a name is never reused across restarts even though agent ids restart at a1;
the principal digest keeps each principal's throwaway spaces apart (and counted apart, kernel/storage/quota.py). They
are removed at the agent's end (its memory, its "#files" index, its files, and every share it gave or received), at
a clean shutdown (the managers drop "eph:" spaces when they close; drop_ephemeral_shares for shares) and at the next
start (the managers sweep them when they open, before any job runs; the share table is swept when this is made).

Files are searchable (fs.search) through the memory service: file_index.py keeps each space's index.
"""

from __future__ import annotations

import enum
import logging
import secrets

from ipc.errors import ErrorCode, ProtocolError
from ipc.messages import Ack
from ipc.service_messages import (
    FileInfo,
    FsData,
    FsListing,
    FsVersions,
    MemId,
    MemRecord,
    MemRecords,
    VersionInfo,
)
from ipc.syscalls import BY_NAME, Worker
from kernel.access.capabilities import Capability
from kernel.access.gate import Gate
from kernel.access.shares import ShareTable
from kernel.services.file_index import FileIndex, index_of
from kernel.services.worker import Job, ServiceWorker
from kernel.storage.owners import principal_digest
from kernel.storage.paths import PrefixMatch

log = logging.getLogger("aiosd.services")

EPHEMERAL_PREFIX = "eph:"  # kernel/memory and kernel/storage keep spaces so named apart and sweep them


class Access(enum.Enum):
    """How a call reached the space it acts on."""

    OWN = "own"
    CAPABILITY = "capability"
    SHARE = "share"


def space_of(agent, boot: str) -> str:
    """The agent's own space; `boot` is ServiceSyscalls.boot, this kernel lifetime's part of ephemeral names."""
    if not agent.ephemeral:
        return f"{agent.principal}/{agent.name}"
    return f"{EPHEMERAL_PREFIX}{boot}/{principal_digest(agent.principal)}/{agent.agent_id}"


class ServiceSyscalls:
    def __init__(
        self, memory: ServiceWorker | None, storage: ServiceWorker | None, shares: ShareTable, audit, tools=None
    ):
        self.memory, self.storage, self.shares = memory, storage, shares
        self.index = FileIndex(memory)
        self.gate = Gate(audit)  # whose space a call may act on: decided and audited through it
        self.tools = tools  # kernel/services/tools.py ToolService, or None
        self.boot = secrets.token_hex(8)  # this kernel lifetime's part of every ephemeral space name
        if tools is not None:  # the files and memory tools act on the caller's space, named here only
            tools.space_of = self.space_of
        self.spaces = None  # kernel/observe/spaces.py SpaceCounts, once attached to the operator's view
        self.drop_ephemeral_shares()

    def attach(self, observation) -> None:
        """Report to the operator's view (kernel/observe/state.py): tool calls in flight, per-space usage."""
        self.spaces = observation.spaces
        if self.tools is not None:
            self.tools.events = observation.tools

    def space_of(self, agent) -> str:
        return space_of(agent, self.boot)

    def tick(self) -> None:
        """Periodic work on the loop: held tool calls whose approval timed out."""
        if self.tools is not None:
            self.tools.tick()
        if self.spaces is not None and self.spaces.due():
            self._count_spaces()

    def _count_spaces(self) -> None:
        """Queue the per-space counts on the services' own threads (no reply; a full queue just skips this round)."""
        spaces, known = self.spaces, list(self.spaces.known_files)
        jobs = [(self.memory, lambda m: spaces.count_memory(m)), (self.storage, lambda s: spaces.count_files(s, known))]
        for worker, run in jobs:
            if worker is not None:
                try:
                    worker.submit(Job(None, None, run))
                except ProtocolError:
                    pass

    def handlers(self) -> dict:
        """A handler per syscall of the services, for those whose worker runs here (the syscall table says which)."""
        table = {
            "access.share": self.share,
            "mem.add": self.mem_add,
            "mem.search": self.mem_search,
            "mem.get": self.mem_get,
            "mem.update": self.mem_update,
            "mem.delete": self.mem_delete,
            "mem.list": self.mem_list,
            "fs.write": self.fs_write,
            "fs.read": self.fs_read,
            "fs.list": self.fs_list,
            "fs.delete": self.fs_delete,
            "fs.versions": self.fs_versions,
            "fs.rollback": self.fs_rollback,
            "fs.search": self.fs_search,
        }
        if self.tools is not None:
            table |= self.tools.handlers()
        running = {Worker.LOOP, Worker.TOOLS}
        running |= {Worker.MEMORY} if self.memory is not None else set()
        running |= {Worker.STORAGE} if self.storage is not None else set()
        return {name: handler for name, handler in table.items() if BY_NAME[name].worker in running}

    def agent_ended(self, agent) -> None:
        """Its held tool calls are forgotten; a throwaway agent's spaces and shares go with it."""
        if self.tools is not None:
            self.tools.agent_ended(agent)
        if not agent.ephemeral:
            return
        space = self.space_of(agent)
        self.shares.drop_owner(space)
        for worker, drop in ((self.memory, (space, index_of(space))), (self.storage, (space,))):
            for name in drop if worker is not None else ():
                try:
                    worker.submit(Job(None, None, lambda service, name=name: service.drop_space(name)))
                except ProtocolError:
                    # a full queue: the space stays until the manager closes (shutdown) or next opens (sweep)
                    log.warning("%s service busy: ephemeral space %r dropped at shutdown", worker.name, name)

    def drop_ephemeral_shares(self) -> None:
        """Drop every share an ephemeral space gives or receives: at start (an earlier lifetime's spaces are gone)
        and, called by whoever stops the services, at shutdown (this lifetime's go when the managers close)."""
        stale = {
            name
            for entry in self.shares.entries()
            for name in (entry.owner, entry.grantee)
            if name.startswith(EPHEMERAL_PREFIX)
        }
        for name in stale:
            self.shares.drop_owner(name)

    # -- handlers (call: the loop's Call: .item, .agent, .now, and .syscall, the call's row in the table) ----------

    def share(self, call, body) -> Ack:
        grantee = body.grantee if "/" in body.grantee else f"{call.agent.principal}/{body.grantee}"
        try:
            self.shares.set(body.kind, self.space_of(call.agent), grantee, body.mode, body.prefix.strip("/"))
        except ValueError as error:
            raise ProtocolError(ErrorCode.QUOTA, str(error)) from None
        self.gate.allow(call.agent, "access.share", target=f"{body.kind}:{grantee}:{body.mode}:{body.prefix}")
        return Ack()

    def mem_add(self, call, body) -> None:
        space = self._mem_space(call, body)
        self._memory_job(call, lambda m: MemId(id=m.add(space, [body.text], [body.metadata])[0]))

    def mem_search(self, call, body) -> None:
        space = self._mem_space(call, body)
        self._memory_job(
            call, lambda m: MemRecords(records=[_record(h) for h in m.search(space, body.query, body.k, body.filter)])
        )

    def mem_get(self, call, body) -> None:
        space = self._mem_space(call, body)
        self._memory_job(call, lambda m: _record(m.get(space, body.id)))

    def mem_update(self, call, body) -> None:
        space = self._mem_space(call, body)
        self._memory_job(call, lambda m: m.update(space, body.id, text=body.text, metadata=body.metadata))

    def mem_delete(self, call, body) -> None:
        space = self._mem_space(call, body)
        self._memory_job(call, lambda m: m.delete(space, body.id))

    def mem_list(self, call, body) -> None:
        space = self._mem_space(call, body)
        self._memory_job(
            call, lambda m: MemRecords(records=[_record(r) for r in m.list(space, body.offset, body.limit)])
        )

    def fs_write(self, call, body) -> None:
        space, owner = self._fs_space(call, body.space, body.path)[0], call.item.identity
        self._storage_job(
            call, lambda s: self.index.after(owner, space, body.path, s.write(space, body.path, body.data), body.data)
        )

    def fs_read(self, call, body) -> None:
        space = self._fs_space(call, body.space, body.path)[0]
        self._storage_job(
            call, lambda s: FsData(**dict(zip(("data", "version"), s.read(space, body.path, body.version))))
        )

    def fs_list(self, call, body) -> None:
        space, access = self._fs_space(call, body.space, body.prefix)
        # a share opens a prefix by whole components: a string-prefix listing would show names beside it
        match = PrefixMatch.COMPONENTS if access is Access.SHARE else PrefixMatch.TEXT
        self._storage_job(call, lambda s: FsListing(files=[_file_info(f) for f in s.list(space, body.prefix, match)]))

    def fs_delete(self, call, body) -> None:
        space, owner = self._fs_space(call, body.space, body.path)[0], call.item.identity
        self._storage_job(call, lambda s: self.index.after(owner, space, body.path, s.delete(space, body.path), None))

    def fs_versions(self, call, body) -> None:
        space = self._fs_space(call, body.space, body.path)[0]
        self._storage_job(call, lambda s: FsVersions(versions=[_version_info(v) for v in s.versions(space, body.path)]))

    def fs_rollback(self, call, body) -> None:
        space, owner = self._fs_space(call, body.space, body.path)[0], call.item.identity
        self._storage_job(call, lambda s: self.index.rolled_back(owner, s, space, body.path, body.version))

    def fs_search(self, call, body) -> None:
        """Through the file index, in the memory service (its worker, the syscall table says)."""
        space = self._fs_space(call, body.space, "")[0]
        index = index_of(space)
        self._memory_job(
            call, lambda m: MemRecords(records=[_record(h) for h in m.search(index, body.query, body.k, None)])
        )

    # -- mechanism -------------------------------------------------------------------------------------------------

    def _memory_job(self, call, run) -> None:
        self.memory.submit(Job(call.item.identity, call.item.envelope.req_id, run))

    def _storage_job(self, call, run) -> None:
        self.storage.submit(Job(call.item.identity, call.item.envelope.req_id, run))

    def _mem_space(self, call, body) -> str:
        return self._space(call, body.space, "mem", call.syscall.writes)[0]

    def _fs_space(self, call, named: str | None, path: str) -> tuple[str, Access]:
        """The file space the call acts on and how it reached it; counted for the operator's view."""
        space, access = self._space(call, named, "fs", call.syscall.writes, path)
        if self.spaces is not None:
            self.spaces.saw_file_space(space)
        return space, access

    def _space(self, call, named: str | None, kind: str, write: bool, path: str = "") -> tuple[str, Access]:
        own = self.space_of(call.agent)
        if named is None or named == own:
            return own, Access.OWN
        capability = Capability.MEM_ANY if kind == "mem" else Capability.FS_ANY
        if capability in call.agent.capabilities:
            self.gate.used(call.agent, call.syscall.name, capability, target=named)
            return named, Access.CAPABILITY
        if self.shares.allows(kind, named, own, write, path.strip("/")):
            return named, Access.SHARE
        self.gate.deny(
            call.agent,
            call.syscall.name,
            f"{named!r} has not shared its {kind} space with {own!r}" + (" for writing" if write else ""),
            target=named,
            reason="no share" + (" for writing" if write else ""),
        )


def _record(hit) -> MemRecord:
    return MemRecord(id=hit.id, text=hit.text, metadata=dict(hit.metadata), score=getattr(hit, "score", None))


def _file_info(info) -> FileInfo:
    return FileInfo(path=info.path, size=info.size, version=info.version, modified=float(info.modified))


def _version_info(info) -> VersionInfo:
    return VersionInfo(
        version=info.version, size=info.size, modified=float(getattr(info, "modified", getattr(info, "time", 0.0)))
    )
