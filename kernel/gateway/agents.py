"""The kernel agents behind the gateway: one AsyncKernel connection per API key, opened on the key's first call.

Each key is its own agent in the kernel (its name, its priority at hello, a grant token carrying its capabilities),
so the kernel's per-agent limits, scheduling, `aios ps` and the audit log see API clients as the agents they are.
A connection that cannot be opened (no kernel) is not kept: the next call tries again. One that drops stays: the
SDK fails its calls in flight, refuses new ones at once while nobody listens, and says hello again once a kernel is
back. Grant tokens are minted through the operator's admin token (read like `aios` reads it), once per key.

A key whose priority or allowance goes above the default gets proc.renice in its token too: the kernel refuses a
hello, or a call's priority hint, above the default without it (kernel/daemon/dispatch.py), and the keys file, the
operator's, is what allows it. The gateway exposes no renice, so the capability reaches no further than the key's
allowance, which the gateway checks per request (kernel/gateway/app.py).

A key's token quotas (tokens_per_minute, max_tokens_total in the keys file) are asked for at its agent's hello: the
kernel holds the agent to them when they are below its own defaults, and answers a call over them `busy` with a
retry-after (the gateway's 429 and Retry-After) or `quota_exceeded`. The kernel keeps what such an agent spent under
the gateway's principal and the agent's name (kernel/observe/quota_book.py), so a new connection of the key (after
the kernel connection dropped, the gateway restarted, or the entry was edited) continues the key's spend under the
entry's current limits; keys naming the same agent share it.
"""

from __future__ import annotations

import asyncio

from ipc import runtime_dir
from ipc.address import admin_token_path
from ipc.messages import DEFAULT_PRIORITY
from kernel.gateway.errors import APIError
from kernel.gateway.keys import KeyEntry
from sdk.aio import AsyncKernel, aconnect

OPEN_AGENT = KeyEntry(id="open", sha256="", agent="gateway")  # the one agent of a gateway run without keys
CALL_TIMEOUT_S = 600.0
RENICE = "proc.renice"


def capabilities(entry: KeyEntry) -> tuple[str, ...]:
    """What entry's agent holds: its grants, and proc.renice if its priority may go above the default."""
    if max(entry.priority, entry.max_priority) > DEFAULT_PRIORITY and RENICE not in entry.grants:
        return entry.grants + (RENICE,)
    return entry.grants


def quotas(entry: KeyEntry) -> dict:
    """The token quotas entry's agent asks for at hello (only those the keys file sets)."""
    asked = {"tokens_per_minute": entry.tokens_per_minute, "max_tokens_total": entry.max_tokens_total}
    return {name: value for name, value in asked.items() if value is not None}


class AgentPool:
    def __init__(self, address: str):
        self.address = address
        self._kernels: dict[tuple, AsyncKernel] = {}
        self._locks: dict[tuple, asyncio.Lock] = {}

    async def kernel(self, entry: KeyEntry) -> AsyncKernel:
        """The connection of entry's agent (an entry edited in the keys file is a new agent)."""
        slot = (
            entry.id,
            entry.agent,
            entry.priority,
            entry.max_priority,
            entry.grants,
            entry.tokens_per_minute,
            entry.max_tokens_total,
        )
        kernel = self._kernels.get(slot)
        if kernel is not None:
            return kernel
        lock = self._locks.setdefault(slot, asyncio.Lock())
        async with lock:
            if slot not in self._kernels:
                granted = capabilities(entry)
                token = await self._grant_token(granted) if granted else None
                self._kernels[slot] = await aconnect(
                    self.address,
                    name=entry.agent,
                    priority=entry.priority,
                    timeout=CALL_TIMEOUT_S,
                    token=token,
                    **quotas(entry),
                )
        return self._kernels[slot]

    async def model(self, entry: KeyEntry) -> str:
        return (await self.kernel(entry)).model

    async def _grant_token(self, grants: tuple[str, ...]) -> str:
        try:
            admin = runtime_dir.read_secret(admin_token_path(self.address)).decode()
        except (OSError, ValueError) as error:
            raise APIError(
                503,
                f"this key's grants need the operator's admin token, which the gateway cannot read ({error})",
                "server_error",
                "grants_unavailable",
            ) from None
        async with await aconnect(self.address, name="aios gateway", token=admin) as operator:
            return await operator.grant(list(grants))

    async def close(self) -> None:
        kernels, self._kernels = list(self._kernels.values()), {}
        await asyncio.gather(*(k.close() for k in kernels), return_exceptions=True)
