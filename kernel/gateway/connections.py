"""Connection limits under uvicorn: the deadlines and caps its HTTP protocols do not enforce themselves.

What uvicorn 0.55 enforces (read in its httptools_impl / h11_impl): an idle keep-alive connection is closed
timeout_keep_alive after its last response, h11 caps one incomplete event (h11_max_incomplete_event_size), and the
body is read at most 64 KiB ahead of the application. What it does not: a deadline for a request's headers (a
connection that never sends a byte is held forever) or body (slow loris), a cap on header bytes with httptools, and a
cap on open connections: its limit_concurrency counts idle connections too and, once they fill it, answers every
request 503, which is the starvation a cap must prevent. guarded(protocol, guard) adds them to uvicorn's protocol:

- Deadlines: a request's headers must arrive within header_timeout_s of the connection's opening or of its previous
  response, in at most max_header_bytes (else 431); its body within body_timeout_s of its headers. A connection past
  either deadline is closed (the application, if it was reading the body, sees the client leave).
- Caps: open connections per client (an IPv4 address, or an IPv6 /64: one host owns a /64) and in total. A
  connection is idle when no request of it is being served (it never sent one, is between keep-alive requests, or
  is still sending headers). A new connection over its client's share closes that client's oldest idle connection;
  over the total, the oldest idle one of the client holding the most. If there is none to close, the newcomer gets
  503 and is closed. So idle connections, however many, never keep another client's request from being served, a
  client's own new request replaces its idle ones, and one client's busy connections never exceed its share.

ConnectionLimits.from_env reads AIOS_GATEWAY_* overrides (tests shorten the deadlines; a gateway behind a reverse
proxy, where every client is the proxy's address, raises the per-client share). The total is kept under the open-file
limit (server.py raises the soft limit to the hard one first), so accepting never fails for lack of descriptors.
"""

from __future__ import annotations

import asyncio
import ipaddress
import resource
from dataclasses import dataclass, fields

ENV_PREFIX = "AIOS_GATEWAY_"
FD_RESERVE = 128  # descriptors kept for the kernel connections, logs and the listening socket


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 1024
    max_per_client: int = 64
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    max_header_bytes: int = 64 << 10

    @classmethod
    def from_env(cls, environ) -> ConnectionLimits:
        """Defaults, overridden by AIOS_GATEWAY_<FIELD> (e.g. AIOS_GATEWAY_MAX_PER_CLIENT); ValueError if invalid."""
        values = {}
        for spec in fields(cls):
            raw = environ.get(ENV_PREFIX + spec.name.upper())
            if raw is None:
                continue
            kind = int if spec.type in (int, "int") else float
            try:
                values[spec.name] = kind(raw)
            except ValueError:
                raise ValueError(f"{ENV_PREFIX}{spec.name.upper()} must be a number, got {raw!r}") from None
            if not values[spec.name] > 0:
                raise ValueError(f"{ENV_PREFIX}{spec.name.upper()} must be positive, got {raw!r}")
        return cls(**values)

    def within_fd_limit(self) -> ConnectionLimits:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self
        most = max(1, soft - FD_RESERVE)
        if self.max_connections <= most:
            return self
        return ConnectionLimits(
            most, min(self.max_per_client, most), self.header_timeout_s, self.body_timeout_s, self.max_header_bytes
        )


def client_key(client: tuple | None) -> str:
    """The unit a share is counted in: the IPv4 address, the IPv6 /64, "" for a unix socket."""
    if not client:
        return ""
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:
        return str(client[0])
    if address.version == 4:
        return str(address)
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.ip_network(f"{address}/64", strict=False))


class ConnectionGuard:
    """The open connections of one server, by client, oldest first. Runs on the event loop only (no locks)."""

    def __init__(self, limits: ConnectionLimits):
        self.limits = limits
        self._clients: dict[str, dict] = {}  # client key → {connection: None}, insertion (= age) order
        self._total = 0
        self.evicted = 0
        self.refused = 0

    def admit(self, conn) -> bool:
        """Register conn, closing an idle connection to make room if needed; False: no room, refuse it."""
        own = self._clients.get(conn.client_key, {})
        if len(own) >= self.limits.max_per_client and not self._evict_from(own):
            self.refused += 1
            return False
        if self._total >= self.limits.max_connections and not self._evict_heaviest():
            self.refused += 1
            return False
        self._clients.setdefault(conn.client_key, {})[conn] = None
        self._total += 1
        return True

    def release(self, conn) -> None:
        own = self._clients.get(conn.client_key)
        if own is None or conn not in own:
            return  # refused, or already released when evicted
        del own[conn]
        self._total -= 1
        if not own:
            del self._clients[conn.client_key]

    def open_connections(self, key: str | None = None) -> int:
        return self._total if key is None else len(self._clients.get(key, ()))

    def _evict_from(self, own: dict) -> bool:
        for conn in own:  # oldest first
            if conn.idle():
                self.release(conn)  # now: its connection_lost comes a loop turn later
                conn.transport.close()
                self.evicted += 1
                return True
        return False

    def _evict_heaviest(self) -> bool:
        for own in sorted(self._clients.values(), key=len, reverse=True):
            if self._evict_from(own):
                return True
        return False


def _raw_response(status: bytes, message: bytes) -> bytes:
    body = b'{"error":{"message":"' + message + b'","type":"server_error","param":null,"code":null}}'
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\nconnection: close\r\nretry-after: 1\r\n\r\n"
        + body
    )


REFUSED = _raw_response(b"503 Service Unavailable", b"too many open connections from this client or in total")
HEADERS_TOO_LARGE = _raw_response(b"431 Request Header Fields Too Large", b"request headers too large")


class _Guarded:
    """Mixed in before uvicorn's HttpToolsProtocol or H11Protocol (both keep self.cycle, self.transport, self.client
    and call on_response_complete when a response is done)."""

    guard: ConnectionGuard
    client_key = ""  # set at connection_made (defaults: connection_lost is safe)
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.client_key = client_key(self.client)
        self._header_bytes = 0
        self._body_cycle = None
        if not self.guard.admit(self):
            transport.write(REFUSED)
            transport.close()
            return
        self._arm(self.guard.limits.header_timeout_s)

    def connection_lost(self, exc) -> None:
        self.guard.release(self)
        self._disarm()
        super().connection_lost(exc)

    def idle(self) -> bool:
        """No request of this connection is being served (never sent one, between requests, or mid-headers)."""
        return self.cycle is None or self.cycle.response_complete

    def data_received(self, data: bytes) -> None:
        if self.idle():
            self._header_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if not self.idle():
            self._header_bytes = 0
            if self.cycle.more_body:
                if self._body_cycle is not self.cycle:  # headers done: the body's deadline starts now
                    self._body_cycle = self.cycle
                    self._arm(self.guard.limits.body_timeout_s)
            else:
                self._disarm()  # the whole request is in: no deadline on answering
        elif self._header_bytes > self.guard.limits.max_header_bytes:
            self.transport.write(HEADERS_TOO_LARGE)
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.idle():  # the next request's headers are due
            self._header_bytes = 0
            self._arm(self.guard.limits.header_timeout_s)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = asyncio.get_running_loop().call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def guarded(protocol: type, guard: ConnectionGuard) -> type:
    """uvicorn's protocol class with guard's limits (a class per server: the guard is that server's state)."""
    return type(f"Guarded{protocol.__name__}", (_Guarded, protocol), {"guard": guard})
