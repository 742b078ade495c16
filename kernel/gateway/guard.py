"""What every request must pass before the gateway reads a byte of its body: RequestGuard, an ASGI middleware.

With a keys file: exactly one Authorization header carrying a known key as a Bearer token, else 401. Without one
(keyless: one open agent, allowed on a loopback address only), a web page the user visits could drive the gateway
through the browser, directly or by DNS rebinding, so a request must show it comes from a local program:
- Host: exactly one, a loopback name or address (localhost, 127.0.0.0/8 written as four decimal numbers, [::1]) with
  the port the connection arrived on (80 if absent), else 403 host_not_allowed (a rebound name is not loopback);
- Origin: absent (not a browser), or exactly one http(s) origin on a loopback host, any port (a local tool's own
  page), else 403 origin_not_allowed ("null" included: sandboxed pages send it);
- a request other than GET/HEAD carries exactly one Content-Type whose media type is application/json, else 415: a
  cross-site page can send only text/plain, form and multipart bodies without a CORS preflight, which gets no approval.
- the connection's peer is a loopback address (or a unix socket), else 403 client_not_allowed: serve() listens on
  loopback only without keys, so this holds by construction and is checked again here;
Then, in both modes, a declared Content-Length over MAX_BODY_BYTES is 413.

Paths under a self-authenticating prefix (the operator's dashboard, /ui: kernel/gateway/ui/) take the keyless checks
above when there is no keys file, but with one they pass here without a key: the dashboard authenticates them itself
(a Bearer key or its session cookie), so a browser can log in. Their admitted key entry is None then.

A refused request is answered at once, its body unread. When the body may be large (declared over DRAIN_BYTES, or
chunked) the answer says `connection: close`, so the server drops the connection instead of reading the rest to
reach the next request; a small one stays alive (uvicorn already holds its body and discards it). The key entry of an
admitted request is left in scope["state"][KEY_STATE] for the routes (kernel/gateway/app.py).
"""

from __future__ import annotations

import ipaddress
from enum import Enum

from starlette.datastructures import Headers

from kernel.gateway.agents import OPEN_AGENT
from kernel.gateway.errors import APIError
from kernel.gateway.keys import KeyEntry, KeyRing
from kernel.gateway.schemas import MAX_BODY_BYTES

KEY_STATE = "gateway_key"
DRAIN_BYTES = 16 << 10  # uvicorn reads 64 KiB ahead of the application: a body this small is already in,
# and what is left of it counts toward the next request's header bytes
BODYLESS_METHODS = frozenset({"GET", "HEAD"})
JSON_MEDIA_TYPE = "application/json"


class Refusal(Enum):
    UNKNOWN_KEY = (
        401,
        "authentication_error",
        "invalid_api_key",
        "unknown API key: pass a key from `aios gateway keys add` as a Bearer token",
    )
    HOST = (
        403,
        "permission_error",
        "host_not_allowed",
        "without a keys file the gateway serves only Host: localhost, 127.0.0.1 or [::1] with its port",
    )
    ORIGIN = (
        403,
        "permission_error",
        "origin_not_allowed",
        "without a keys file the gateway serves no web page's requests but a loopback origin's",
    )
    CONTENT_TYPE = (
        415,
        "invalid_request_error",
        "unsupported_media_type",
        "without a keys file the gateway takes bodies with Content-Type: application/json only",
    )
    CLIENT = (
        403,
        "permission_error",
        "client_not_allowed",
        "without a keys file the gateway serves loopback clients only",
    )
    TOO_LARGE = (413, "invalid_request_error", "too_large", f"request body over {MAX_BODY_BYTES} bytes")

    def error(self) -> APIError:
        status, type_, code, message = self.value
        return APIError(status, message, type_, code)


def is_loopback_host(host: str) -> bool:
    """localhost, an IPv4 loopback address in dotted-quad form, or ::1 (brackets already removed)."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if address.version == 6:
        return address == ipaddress.IPv6Address("::1") and "%" not in host  # no zone ids, no mapped forms
    return address.is_loopback and host.count(".") == 3


def split_authority(authority: str, default_port: int) -> tuple[str, int] | None:
    """(host, port) of "host[:port]" or "[v6][:port]"; None if malformed."""
    if authority.startswith("["):
        host, bracket, rest = authority[1:].partition("]")
        if not bracket or ":" not in host or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text = authority.partition(":")
        port_text = port_text if colon else None
        if ":" in (port_text or ""):
            return None
    if port_text is None:
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):
        return None
    return host, int(port_text)


def host_allowed(host_header: str, port: int) -> bool:
    parts = split_authority(host_header, 80)
    return parts is not None and parts[1] == port and is_loopback_host(parts[0])


def origin_allowed(origin: str) -> bool:
    scheme, sep, authority = origin.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or "/" in authority or "@" in authority:
        return False
    parts = split_authority(authority, 443 if scheme.lower() == "https" else 80)
    return parts is not None and is_loopback_host(parts[0])


def client_allowed(client) -> bool:
    """The connection's peer: a loopback IP address, or none (a unix socket)."""
    if not client:
        return True
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:
        return False
    return address.is_loopback or (address.version == 6 and (address.ipv4_mapped or address).is_loopback)


def json_content_type(values: list[str]) -> bool:
    return len(values) == 1 and values[0].partition(";")[0].strip().lower() == JSON_MEDIA_TYPE


class RequestGuard:
    """ASGI middleware: authenticate (or, keyless, check where the request comes from) before the body is read."""

    def __init__(self, app, keyring: KeyRing | None, self_authenticated: tuple[str, ...] = ()):
        self.app, self.keyring = app, keyring
        self.self_authenticated = self_authenticated  # path prefixes whose routes check keys themselves

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        entry, refusal = self._admit(scope, headers)
        if refusal is not None:
            response = refusal.error().response()
            declared = headers.get("content-length")
            if (
                declared is not None and not (declared.isdigit() and int(declared) <= DRAIN_BYTES)
            ) or "transfer-encoding" in headers:
                response.headers["connection"] = "close"
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})[KEY_STATE] = entry
        await self.app(scope, receive, send)

    def _admit(self, scope, headers: Headers) -> tuple[KeyEntry | None, Refusal | None]:
        if self.keyring is None:
            refusal = self._keyless_refusal(scope, headers)
            if refusal is not None:
                return None, refusal
            entry = OPEN_AGENT
        elif self._self_authenticated(scope.get("path", "")):
            entry = None
        else:
            entry = self._lookup(headers.getlist("authorization"))
            if entry is None:
                return None, Refusal.UNKNOWN_KEY
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return None, Refusal.TOO_LARGE
        return entry, None

    def _self_authenticated(self, path: str) -> bool:
        return any(path == prefix or path.startswith(prefix + "/") for prefix in self.self_authenticated)

    def _lookup(self, authorization: list[str]) -> KeyEntry | None:
        if len(authorization) != 1:
            return None
        scheme, _, key = authorization[0].partition(" ")
        key = key.strip()
        return self.keyring.lookup(key) if scheme.lower() == "bearer" and key else None

    @staticmethod
    def _keyless_refusal(scope, headers: Headers) -> Refusal | None:
        hosts = headers.getlist("host")
        server = scope.get("server") or (None, None)
        if len(hosts) != 1 or server[1] is None or not host_allowed(hosts[0], server[1]):
            return Refusal.HOST
        if not client_allowed(scope.get("client")):
            return Refusal.CLIENT
        origins = headers.getlist("origin")
        if len(origins) > 1 or (origins and not origin_allowed(origins[0])):
            return Refusal.ORIGIN
        if scope["method"] not in BODYLESS_METHODS and not json_content_type(headers.getlist("content-type")):
            return Refusal.CONTENT_TYPE
        return None
