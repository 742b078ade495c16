"""Which connection a routing id is, so an agent record ends when its connection does.

libzmq tells a ROUTER's owner about connections only through the socket monitor, whose events name the connection's
file descriptor, never its routing id; a received message names its descriptor too (ZMQ_SRCFD). The I/O thread maps
descriptor → routing id at hello (the one syscall that makes an agent record) and turns the monitor's
DISCONNECTED(fd) into ConnectionClosed(routing id).

Ordering: libzmq's I/O thread posts ACCEPTED(fd) before any message of that connection can be read, so draining the
monitor just before handling a hello brings the descriptor's state up to date. A descriptor's events alternate
ACCEPTED, DISCONNECTED, ... (it cannot be reused before it is closed). A hello read from a descriptor the monitor
already reports closed comes from a connection that is gone: its record must end at once.
"""
from __future__ import annotations


class ConnectionTracker:
    def __init__(self):
        self._identity_of: dict[int, bytes] = {}
        self._open: set[int] = set()

    def accepted(self, fd: int) -> None:
        self._open.add(fd)

    def disconnected(self, fd: int) -> bytes | None:
        """The routing id whose connection closed, if it had said hello."""
        self._open.discard(fd)
        return self._identity_of.pop(fd, None)

    def hello(self, fd: int, identity: bytes) -> list[bytes]:
        """Bind fd to identity (call after draining the monitor). Returns the routing ids now known closed: identity
        itself if its connection is gone already, or an earlier connection that held this descriptor."""
        if fd not in self._open:
            return [identity]
        previous = self._identity_of.get(fd)
        self._identity_of[fd] = identity
        return [previous] if previous is not None and previous != identity else []
