"""What the I/O thread hands the kernel loop: syscalls with the peer the kernel saw send them, and connection events.

The inbox is ordered: a connection's syscalls and its ConnectionClosed arrive in the order they happened, so an agent
record can never outlive its connection. Its depth is bounded twice, both counted when the I/O thread queues a syscall
and given back when the loop takes it: in all (DEFAULT_MAX_QUEUED) and per connection (DEFAULT_MAX_PER_CONNECTION), so
one flooding client fills its own share and gets `busy`, while everyone else's calls still find room.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ipc.codec import Envelope

if TYPE_CHECKING:
    from kernel.engine.structured.tool_formats import ToolFormat

DEFAULT_MAX_QUEUED = 4096  # syscalls decoded but not yet handled by the loop, all agents together
DEFAULT_MAX_PER_CONNECTION = 256  # ... of one connection


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of a connection, as the operating system or the Curve handshake says: never taken from
    what the agent writes. uid and pid come from SO_PEERCRED on ipc://; key is the name of an authorized Curve key on
    tcp://."""

    address: str
    uid: int | None = None
    pid: int | None = None
    key: str | None = None

    @classmethod
    def from_zmq(cls, peer_address: str | None, user_id: str | None) -> Peer:
        # libzmq writes an ipc:// peer's credentials as "host:uid:gid:pid" (SO_PEERCRED at accept)
        address = peer_address or ""
        parts = address.rsplit(":", 3)
        if len(parts) == 4 and all(p.isdigit() for p in parts[1:]):
            return cls(address=address, uid=int(parts[1]), pid=int(parts[3]))
        return cls(address=address, key=user_id or None)

    @property
    def principal(self) -> str:
        """The name the kernel gives the caller in its tables and audit log."""
        if self.key:
            return f"key:{self.key}"
        if self.uid is not None:
            return f"uid:{self.uid}"
        return f"net:{self.address or 'unknown'}"


@dataclass(frozen=True)
class Inbound:
    identity: bytes  # the sender's routing id
    envelope: Envelope
    received: float  # time.monotonic() at receipt
    peer: Peer | None = None  # read for hello only: the one syscall that binds a connection to a principal
    prompt_ids: list[int] | None = None  # an LLM call's prompt, tokenized off the loop by the preprocessor
    grammar: str | None = None  # ... the grammar its output must follow (a chat offering tools)
    tool_format: ToolFormat | None = None  # ... the format its output is parsed into tool calls with


@dataclass(frozen=True)
class ConnectionClosed:
    identity: bytes


@dataclass(frozen=True)
class ConnectionStalled:
    """The peer stopped reading: its send queue is full and replies to it are being dropped."""

    identity: bytes


class Inbox:
    """The loop's queue. put_stop() is safe in a signal handler (SimpleQueue.put is reentrant)."""

    def __init__(self, max_queued: int = DEFAULT_MAX_QUEUED, max_per_connection: int = DEFAULT_MAX_PER_CONNECTION):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._free = max_queued
        self._per_connection: dict[bytes, int] = {}
        self._max_per_connection = max_per_connection
        self._lock = threading.Lock()

    def try_reserve(self, identity: bytes) -> bool:
        """Room for one more syscall from this connection? Taken if so."""
        with self._lock:
            held = self._per_connection.get(identity, 0)
            if self._free <= 0 or held >= self._max_per_connection:
                return False
            self._free -= 1
            self._per_connection[identity] = held + 1
            return True

    def release(self, identity: bytes) -> None:
        """Give back a syscall's room: the loop took it, or a thread answered it before it got there."""
        with self._lock:
            self._free += 1
            held = self._per_connection.pop(identity) - 1
            if held:
                self._per_connection[identity] = held

    def put(self, item) -> None:
        """A syscall (after try_reserve) or a connection event (always accepted: they are few and must not be lost)."""
        self._queue.put(item)

    def put_stop(self) -> None:
        self._queue.put(None)

    def get(self, timeout: float | None = None):
        """The next item, or None for stop; queue.Empty after timeout (0 → do not wait)."""
        item = self._queue.get(timeout=timeout) if timeout != 0 else self._queue.get_nowait()
        if isinstance(item, Inbound):
            self.release(item.identity)
        return item
