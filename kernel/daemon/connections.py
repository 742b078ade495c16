"""Which connection a routing id is, so an agent record ends when its connection does; and how many connections each
principal holds, so none can take the kernel's descriptors.

libzmq tells a ROUTER's owner about connections only through the socket monitor, whose events name the connection's
file descriptor, never its routing id; a received message names its descriptor too (ZMQ_SRCFD). The I/O thread maps
descriptor → routing id at hello (the one syscall that makes an agent record) and turns the monitor's
DISCONNECTED(fd) into ConnectionClosed(routing id).

Ordering: libzmq's I/O thread posts ACCEPTED(fd) before any message of that connection can be read, so draining the
monitor just before handling a hello brings the descriptor's state up to date. A descriptor's events alternate
ACCEPTED, DISCONNECTED, ... (it cannot be reused before it is closed: libzmq posts DISCONNECTED before it closes). A
hello read from a descriptor the monitor already reports closed comes from a connection that is gone: its record must
end at once.

Limits (kernel/daemon/limits.py ConnectionBudget): at ACCEPTED the tracker names the connection's principal from the
descriptor itself (SO_PEERCRED's uid on ipc://, the peer's IP address on tcp://: a Curve key is known only after
the handshake, and agents are capped per key at hello) and counts it. Over the principal's cap or the total, the
oldest connection that has not said hello (of that principal, or of anyone for the total) makes room; with none, the
new connection is dropped. A connection silent past hello_timeout_s is dropped too. libzmq's ROUTER cannot drop one
peer, but shutting the connection's socket down (shut_down) makes libzmq read end-of-file and close it itself, with
the usual DISCONNECTED event. Nothing can be answered there (no message names a routing id yet): such connections are
dropped, not refused; over the agent caps, a hello is answered `busy` (kernel/daemon/dispatch.py).

The caps act on the monitor's events, which lag behind libzmq's accepts under a connection flood (measured: ~550
connections behind at 14,000 connects/s), and libzmq aborts the process if an ipc:// accept meets EMFILE. So the I/O
thread also watches the descriptors themselves (FdPressure): when the process nears its limit it stops listening
(unbind) until the count is back within the budget, and a connect in the meantime is refused by the operating system.
"""

from __future__ import annotations

import collections
import fcntl
import os
import socket
import stat
import struct
from dataclasses import dataclass

from kernel.daemon.limits import ConnectionBudget

UNKNOWN_PRINCIPAL = "unknown"  # a connection closed before the tracker could look at its descriptor
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass
class _Connection:
    principal: str
    inode: int | None  # the socket's inode: a descriptor reused by another socket is never shut down
    deadline: float | None  # when it is dropped if it has not said hello; None once it has
    identity: bytes | None = None
    dropped: bool = False  # shut down here: uncounted now, forgotten at its DISCONNECTED


class ConnectionTracker:
    def __init__(self, budget: ConnectionBudget | None = None):
        self.budget = budget or ConnectionBudget.for_process()
        self._by_fd: dict[int, _Connection] = {}
        self._silent: collections.OrderedDict[int, None] = collections.OrderedDict()  # no hello yet, oldest first
        self._silent_of: dict[str, collections.OrderedDict[int, None]] = {}
        self._held: collections.Counter[str] = collections.Counter()
        self.dropped = 0  # connections dropped so far (over a cap or silent too long)

    def __len__(self) -> int:
        """Connections held (not dropped)."""
        return sum(self._held.values())

    def held(self, principal: str) -> int:
        return self._held[principal]

    def accepted(self, fd: int, now: float) -> list[tuple[int, int | None]]:
        """Count a new connection; returns the (fd, inode) of connections to shut down to stay within the budget."""
        self._forget(fd)
        principal, inode = inspect(fd)
        self._by_fd[fd] = _Connection(principal, inode, now + self.budget.hello_timeout_s)
        self._silent[fd] = None
        self._silent_of.setdefault(principal, collections.OrderedDict())[fd] = None
        self._held[principal] += 1
        victims = []
        if self._held[principal] > self.budget.max_connections_per_principal:
            victims.append(self._drop(next(iter(self._silent_of[principal]))))
        elif len(self) > self.budget.max_connections:
            victims.append(self._drop(next(iter(self._silent))))
        return victims

    def disconnected(self, fd: int) -> bytes | None:
        """The routing id whose connection closed, if it had said hello."""
        connection = self._forget(fd)
        return None if connection is None else connection.identity

    def hello(self, fd: int, identity: bytes) -> list[bytes]:
        """Bind fd to identity (call after draining the monitor). Returns the routing ids now known closed: identity
        itself if its connection is gone already (or being dropped), or an earlier connection that held this
        descriptor."""
        connection = self._by_fd.get(fd)
        if connection is None or connection.dropped:
            return [identity]
        self._unsilence(fd, connection)
        previous, connection.identity = connection.identity, identity
        return [previous] if previous is not None and previous != identity else []

    def expired(self, now: float) -> list[tuple[int, int | None]]:
        """Connections silent past their hello deadline, to shut down (oldest first)."""
        victims = []
        while self._silent and self._by_fd[next(iter(self._silent))].deadline <= now:
            victims.append(self._drop(next(iter(self._silent))))
        return victims

    def next_deadline(self) -> float | None:
        return self._by_fd[next(iter(self._silent))].deadline if self._silent else None

    # -- bookkeeping ---------------------------------------------------------------------------------------------

    def _drop(self, fd: int) -> tuple[int, int | None]:
        connection = self._by_fd[fd]
        self._uncount(fd, connection)
        connection.dropped = True
        self.dropped += 1
        return fd, connection.inode

    def _forget(self, fd: int) -> _Connection | None:
        connection = self._by_fd.pop(fd, None)
        if connection is not None and not connection.dropped:
            self._uncount(fd, connection)
        return connection

    def _uncount(self, fd: int, connection: _Connection) -> None:
        self._unsilence(fd, connection)
        self._held[connection.principal] -= 1
        if not self._held[connection.principal]:
            del self._held[connection.principal]

    def _unsilence(self, fd: int, connection: _Connection) -> None:
        connection.deadline = None
        self._silent.pop(fd, None)
        silent = self._silent_of.get(connection.principal)
        if silent is not None:
            silent.pop(fd, None)
            if not silent:
                del self._silent_of[connection.principal]


class FdPressure:
    """Whether this process is near its descriptor limit, read from the descriptor table itself (never lagging).
    Descriptors are handed out lowest first, so `high` being open is a cheap (one fcntl) sign of pressure, confirmed
    by counting /proc/self/fd (a long-lived descriptor numbered high is no pressure by itself)."""

    def __init__(self, fd_limit: int, reserve: int):
        # the budget keeps connections and agents under fd_limit - reserve; the first quarter of the reserve is for
        # the kernel's own descriptors, the second for connections the caps have not caught up with yet, the last
        # half for what libzmq accepts between two looks (measured: 84 in 1.7 ms) and before it stops listening
        self.high = max(3, fd_limit - reserve // 2)  # stop listening at this many open descriptors
        self.low = max(2, fd_limit - reserve * 3 // 4)  # listen again below this many

    def pressed(self) -> bool:
        return _is_open(self.high) and open_fds() >= self.high

    def relieved(self) -> bool:
        return open_fds() < self.low


def _is_open(fd: int) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_GETFD)
    except OSError:
        return False
    return True


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the descriptor listdir itself held
    except OSError:  # no /proc: assume the worst only where the cheap sign says so
        return 0


def inspect(fd: int) -> tuple[str, int | None]:
    """(principal, socket inode) of a connection's descriptor, read from the operating system, never from the peer."""
    try:
        dup = os.dup(fd)
    except OSError:
        return UNKNOWN_PRINCIPAL, None
    try:
        info = os.fstat(dup)
        if not stat.S_ISSOCK(info.st_mode):
            return UNKNOWN_PRINCIPAL, None
        with socket.socket(fileno=dup) as sock:
            dup = None  # the socket object closes it
            if sock.family == socket.AF_UNIX:
                _pid, uid, _gid = _PEERCRED.unpack(
                    sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
                )
                return f"uid:{uid}", info.st_ino
            return f"net:{sock.getpeername()[0]}", info.st_ino
    except OSError:
        return UNKNOWN_PRINCIPAL, None
    finally:
        if dup is not None:
            os.close(dup)


def shut_down(fd: int, inode: int | None) -> bool:
    """Make libzmq drop the connection on fd: shut its socket down (libzmq reads end-of-file and closes it). Only if fd
    still holds the socket the tracker saw (inode), so a descriptor reused since is never touched."""
    try:
        dup = os.dup(fd)
    except OSError:  # closed already
        return False
    try:
        info = os.fstat(dup)
        if inode is None or info.st_ino != inode or not stat.S_ISSOCK(info.st_mode):
            return False
        with socket.socket(fileno=dup) as sock:
            dup = None
            sock.shutdown(socket.SHUT_RDWR)
        return True
    except OSError:
        return False
    finally:
        if dup is not None:
            os.close(dup)
