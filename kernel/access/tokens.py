"""Tokens an agent presents at hello to hold capabilities: the operator's admin token and grant tokens.

The admin token is made afresh at each kernel start and written (0600, atomically) into the kernel's private runtime
directory, where the operator's `aios` CLI reads it: holding it means being the operator. Grant tokens are minted by
the kernel for a holder of access.grant and live in memory only, so they die with the kernel.

Bounds: tokens the kernel mints for itself (pinned: the tool servers' link back) are never evicted and not counted.
Each granter holds at most MAX_GRANTS_PER_GRANTER grants, past which its own oldest goes (a granter can only ever
evict its own); in all at most MAX_GRANTS, past which mint answers BUSY: a full table is a clear error, never a silent
eviction of another principal's grant. Grants are found by the SHA-256 of the token (no scan); the admin token is
compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from collections import OrderedDict
from dataclasses import dataclass

from ipc import runtime_dir
from ipc.errors import ErrorCode, ProtocolError
from kernel.access.capabilities import ALL, Capability

log = logging.getLogger("aiosd.access")

MAX_GRANTS = 4096
MAX_GRANTS_PER_GRANTER = 256


@dataclass(frozen=True)
class _Grant:
    capabilities: frozenset
    granter: str | None
    pinned: bool


class TokenRegistry:
    def __init__(
        self,
        admin_token_path: str | None,
        *,
        max_grants: int = MAX_GRANTS,
        max_per_granter: int = MAX_GRANTS_PER_GRANTER,
    ):
        self._admin = secrets.token_hex(32)
        self._grants: dict[bytes, _Grant] = {}  # sha256(token) -> grant
        self._by_granter: dict[str, OrderedDict[bytes, None]] = {}  # granter -> its grants, oldest first
        self._counted = 0  # grants not pinned
        self._max_grants, self._max_per_granter = max_grants, max_per_granter
        self.admin_token_path = admin_token_path
        if admin_token_path:
            runtime_dir.write_secret(admin_token_path, self._admin.encode())

    def capabilities(self, token: str | None) -> frozenset[Capability] | None:
        """What a token carries: frozenset() for no token, None for a token the kernel did not issue."""
        if token is None:
            return frozenset()
        if hmac.compare_digest(token.encode(), self._admin.encode()):
            return ALL
        grant = self._grants.get(_digest(token))
        return grant.capabilities if grant is not None else None

    def mint(self, capabilities: frozenset[Capability], *, granter: str | None = None, pinned: bool = False) -> str:
        """A new grant token. pinned: the kernel's own (never evicted, not counted). granter: whose grant it is (its
        own oldest goes past MAX_GRANTS_PER_GRANTER). ProtocolError(BUSY) when the kernel holds max_grants."""
        if not pinned:
            mine = self._by_granter.get(granter) if granter is not None else None
            if mine is not None and len(mine) >= self._max_per_granter:
                self._evict(next(iter(mine)))  # the granter's own oldest grant goes first
            if self._counted >= self._max_grants:
                raise ProtocolError(ErrorCode.BUSY, f"the kernel holds its limit of {self._max_grants} grant tokens")
        token = secrets.token_hex(24)
        digest = _digest(token)
        self._grants[digest] = _Grant(frozenset(capabilities), granter, pinned)
        if not pinned:
            self._counted += 1
            if granter is not None:
                self._by_granter.setdefault(granter, OrderedDict())[digest] = None
        return token

    def __len__(self) -> int:
        return len(self._grants)

    def _evict(self, digest: bytes) -> None:
        grant = self._grants.pop(digest)
        self._counted -= 1
        mine = self._by_granter[grant.granter]
        del mine[digest]
        if not mine:
            del self._by_granter[grant.granter]

    def close(self) -> None:
        if self.admin_token_path:
            try:
                os.unlink(self.admin_token_path)
            except FileNotFoundError:
                pass


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
