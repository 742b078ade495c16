"""The agent table: one record per connected agent (a DEALER connection that said hello).

Who an agent is comes from its connection (kernel/daemon/inbound.py Peer), never from what it says: its principal,
and on ipc:// the pid the operating system reports for the peer. An agent ends when its connection closes (the I/O
thread's monitor), when that process exits (the kernel holds a pidfd to it and notices at once, kill -9 included), or,
on tcp://, when it stays silent past its lease (every message renews it; the SDK heartbeats while it waits).
"""

from __future__ import annotations

import collections
import os
import select
from dataclasses import dataclass, field

from ipc.messages import DEFAULT_PRIORITY, Hello, RequestInfo
from kernel.access.capabilities import Capability
from kernel.daemon.inbound import Peer
from kernel.observe.quotas import Quota

RECENT_DONE = 8  # finished requests kept per agent for proc.list
MAX_KILLED_REMEMBERED = 4096


@dataclass
class AgentRecord:
    agent_id: str
    name: str
    identity: bytes  # ZeroMQ routing id of its connection
    priority: int
    priority_ceiling: int  # the highest priority it may give itself without proc.renice (dispatch.py)
    principal: str  # made by the kernel from the connection: "uid:N", "key:NAME", "net:ADDR"
    pid: int | None  # from the operating system (ipc://), None on tcp://
    pidfd: int | None  # open while the kernel watches the process
    last_seen: float  # monotonic seconds of its last message
    capabilities: frozenset[Capability] = frozenset()
    ephemeral: bool = False  # its memory and files are dropped when it ends
    service_tokens: int = 0  # prompt + output tokens served across all its calls
    recent_done: collections.deque[RequestInfo] = field(default_factory=lambda: collections.deque(maxlen=RECENT_DONE))
    quota: Quota = field(default_factory=lambda: Quota(None, None))  # its token limits (kernel/observe/quotas.py)


class AgentTable:
    def __init__(self):
        self._by_id: dict[str, AgentRecord] = {}
        self._by_identity: dict[bytes, AgentRecord] = {}
        self._of_principal: collections.Counter[str] = collections.Counter()
        # connections whose agent was killed get KILLED, not a new hello; forgotten when the connection closes
        self._killed: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._next_number = 1

    def register(
        self,
        identity: bytes,
        hello: Hello,
        peer: Peer,
        capabilities: frozenset[Capability],
        now: float,
        quota: Quota | None = None,
    ) -> AgentRecord:
        agent = AgentRecord(
            agent_id=f"a{self._next_number}",
            name=hello.name,
            identity=identity,
            priority=hello.priority,
            priority_ceiling=max(DEFAULT_PRIORITY, hello.priority),
            principal=peer.principal,
            pid=peer.pid,
            pidfd=_watch(peer.pid),
            last_seen=now,
            capabilities=capabilities,
            ephemeral=hello.ephemeral,
            quota=quota or Quota(None, None),
        )
        self._next_number += 1
        self._by_id[agent.agent_id] = agent
        self._by_identity[identity] = agent
        self._of_principal[agent.principal] += 1
        return agent

    def count_of(self, principal: str) -> int:
        """Agents of one principal (the connection limits cap them: kernel/daemon/limits.py)."""
        return self._of_principal[principal]

    def get(self, agent_id: str) -> AgentRecord | None:
        return self._by_id.get(agent_id)

    def by_identity(self, identity: bytes) -> AgentRecord | None:
        return self._by_identity.get(identity)

    def was_killed(self, identity: bytes) -> bool:
        return identity in self._killed

    def forget_connection(self, identity: bytes) -> None:
        self._killed.pop(identity, None)

    def remove(self, agent_id: str, killed: bool = False) -> AgentRecord | None:
        agent = self._by_id.pop(agent_id, None)
        if agent is None:
            return None
        del self._by_identity[agent.identity]
        self._of_principal[agent.principal] -= 1
        if not self._of_principal[agent.principal]:
            del self._of_principal[agent.principal]
        if killed:
            self._killed[agent.identity] = None
            if len(self._killed) > MAX_KILLED_REMEMBERED:
                self._killed.popitem(last=False)
        if agent.pidfd is not None:
            os.close(agent.pidfd)
            agent.pidfd = None
        return agent

    def dead(self, now: float, lease_s: float) -> list[AgentRecord]:
        """Agents whose process exited, and unwatched agents silent for longer than the lease."""
        watched = {a.pidfd: a for a in self._by_id.values() if a.pidfd is not None}
        exited = []
        if watched:
            poller = select.poll()  # not select(): it cannot watch a descriptor numbered 1024 or more
            for fd in watched:
                poller.register(fd, select.POLLIN)
            exited = [fd for fd, _ in poller.poll(0)]
        silent = [a for a in self._by_id.values() if a.pidfd is None and now - a.last_seen > lease_s]
        return [watched[fd] for fd in exited] + silent

    def close(self) -> None:
        for agent_id in list(self._by_id):
            self.remove(agent_id)

    def __iter__(self):
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)


def _watch(pid: int | None) -> int | None:
    """A pidfd for the agent's process, whose pid the operating system gave us (a pidfd, unlike a pid, cannot be
    recycled)."""
    if pid is None or pid <= 0:
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:  # gone already, or another pid namespace: fall back to the lease
        return None
