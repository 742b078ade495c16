"""Tokens an agent presents at hello to hold capabilities: the operator's admin token and grant tokens.

The admin token is made afresh at each kernel start and written (0600, atomically) into the kernel's private runtime
directory, where the operator's `aios` CLI reads it: holding it means being the operator. Grant tokens are minted by
the kernel for a holder of access.grant and live in memory only, so they die with the kernel; each is bounded in
number. Comparison is constant-time.
"""
from __future__ import annotations

import hmac
import logging
import os
import secrets

from ipc import runtime_dir
from kernel.access.capabilities import ALL, Capability

log = logging.getLogger("aiosd.access")

MAX_GRANTS = 1024


class TokenRegistry:
    def __init__(self, admin_token_path: str | None):
        self._admin = secrets.token_hex(32)
        self._grants: dict[str, frozenset[Capability]] = {}
        self.admin_token_path = admin_token_path
        if admin_token_path:
            runtime_dir.write_secret(admin_token_path, self._admin.encode())

    def capabilities(self, token: str | None) -> frozenset[Capability] | None:
        """What a token carries: frozenset() for no token, None for a token the kernel did not issue."""
        if token is None:
            return frozenset()
        if hmac.compare_digest(token.encode(), self._admin.encode()):
            return ALL
        for grant, capabilities in self._grants.items():
            if hmac.compare_digest(token.encode(), grant.encode()):
                return capabilities
        return None

    def mint(self, capabilities: frozenset[Capability]) -> str:
        if len(self._grants) >= MAX_GRANTS:        # the oldest grant goes first
            del self._grants[next(iter(self._grants))]
        token = secrets.token_hex(24)
        self._grants[token] = capabilities
        return token

    def close(self) -> None:
        if self.admin_token_path:
            try:
                os.unlink(self.admin_token_path)
            except FileNotFoundError:
                pass
