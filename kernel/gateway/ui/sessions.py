"""Dashboard login sessions: a browser that posted a valid operator key to /ui/login holds a random session id in an
HttpOnly cookie instead of the key.

A session maps the id (32 random bytes, URL-safe) to the key itself, kept in the gateway's memory only, so each
request looks the key up in the keys file again: a key revoked there logs its sessions out at their next request.
Sessions expire after ttl_s and are bounded (max_sessions; past it the oldest goes), so logins cannot grow the
gateway's memory. Ids are compared by dictionary lookup of their SHA-256, never by scanning.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

COOKIE = "aios_ui_session"
TTL_S = 12 * 3600.0
MAX_SESSIONS = 1024


class Sessions:
    def __init__(self, ttl_s: float = TTL_S, max_sessions: int = MAX_SESSIONS, clock: Callable[[], float] = time.time):
        self.ttl_s, self.max_sessions, self._clock = ttl_s, max_sessions, clock
        self._by_digest: OrderedDict[bytes, tuple[str, float]] = OrderedDict()  # oldest first: (key, expiry)

    def open(self, key: str) -> str:
        """A new session id for key."""
        while len(self._by_digest) >= self.max_sessions:
            self._by_digest.popitem(last=False)
        session = secrets.token_urlsafe(32)
        self._by_digest[_digest(session)] = (key, self._clock() + self.ttl_s)
        return session

    def key(self, session: str | None) -> str | None:
        """The key a live session was opened with; None for an unknown or expired one (which is forgotten)."""
        if not session or len(session) > 128:
            return None
        digest = _digest(session)
        held = self._by_digest.get(digest)
        if held is None:
            return None
        if held[1] <= self._clock():
            del self._by_digest[digest]
            return None
        return held[0]

    def close(self, session: str | None) -> None:
        if session and len(session) <= 128:
            self._by_digest.pop(_digest(session), None)

    def __len__(self) -> int:
        return len(self._by_digest)


def _digest(session: str) -> bytes:
    return hashlib.sha256(session.encode("utf-8", "surrogatepass")).digest()
