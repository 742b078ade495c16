"""The agent table: one record per connected agent (a DEALER connection that said hello).

An agent dies with its OS process: when hello names a pid on this host, the kernel holds a pidfd to it and notices the
exit at once (kill -9 included). An agent on another host cannot be watched that way; it holds a lease instead, renewed
by every message it sends (the SDK heartbeats while it waits on a long call), and is reaped when the lease runs out.
"""
from __future__ import annotations

import collections
import os
import select
import socket
from dataclasses import dataclass, field

from ipc.messages import Hello, RequestInfo

RECENT_DONE = 8          # finished requests kept per agent for proc.list


@dataclass
class AgentRecord:
    agent_id: str
    name: str
    identity: bytes                  # ZeroMQ routing id of its connection
    priority: int
    pid: int | None
    pidfd: int | None                # open while the kernel watches the process
    last_seen: float                 # monotonic seconds of its last message
    service_tokens: int = 0          # prompt + output tokens served across all its calls
    recent_done: collections.deque[RequestInfo] = field(
        default_factory=lambda: collections.deque(maxlen=RECENT_DONE))


class AgentTable:
    def __init__(self):
        self._by_id: dict[str, AgentRecord] = {}
        self._by_identity: dict[bytes, AgentRecord] = {}
        self._killed: set[bytes] = set()      # connections whose agent was killed: they get KILLED, not a new hello
        self._next_number = 1

    def register(self, identity: bytes, hello: Hello, now: float) -> AgentRecord:
        agent = AgentRecord(agent_id=f"a{self._next_number}", name=hello.name, identity=identity,
                            priority=hello.priority, pid=hello.pid, pidfd=_watch(hello), last_seen=now)
        self._next_number += 1
        self._by_id[agent.agent_id] = agent
        self._by_identity[identity] = agent
        return agent

    def get(self, agent_id: str) -> AgentRecord | None:
        return self._by_id.get(agent_id)

    def by_identity(self, identity: bytes) -> AgentRecord | None:
        return self._by_identity.get(identity)

    def was_killed(self, identity: bytes) -> bool:
        return identity in self._killed

    def remove(self, agent_id: str, killed: bool = False) -> AgentRecord | None:
        agent = self._by_id.pop(agent_id, None)
        if agent is None:
            return None
        del self._by_identity[agent.identity]
        if killed:
            self._killed.add(agent.identity)
        if agent.pidfd is not None:
            os.close(agent.pidfd)
            agent.pidfd = None
        return agent

    def dead(self, now: float, lease_s: float) -> list[AgentRecord]:
        """Agents whose process exited, and unwatched agents silent for longer than the lease."""
        watched = {a.pidfd: a for a in self._by_id.values() if a.pidfd is not None}
        exited, _, _ = select.select(list(watched), [], [], 0) if watched else ([], [], [])
        silent = [a for a in self._by_id.values() if a.pidfd is None and now - a.last_seen > lease_s]
        return [watched[fd] for fd in exited] + silent

    def close(self) -> None:
        for agent_id in list(self._by_id):
            self.remove(agent_id)

    def __iter__(self):
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)


def _watch(hello: Hello) -> int | None:
    """A pidfd for the agent's process when it runs on this host (a pidfd, unlike a pid, cannot be recycled)."""
    if hello.pid is None or hello.pid <= 0 or hello.host != socket.gethostname():
        return None
    try:
        return os.pidfd_open(hello.pid)
    except OSError:          # gone already, or another pid namespace: fall back to the lease
        return None
