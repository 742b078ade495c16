"""The quota book: what a quota an agent asked for has spent, kept under its principal and agent name so that it
outlives the connection.

Who keeps what:
- An agent that asks for a quota at hello (Hello.tokens_per_minute / max_tokens_total) names a budget for itself: the
  gateway asks this way for each API key's quota (kernel/gateway/agents.py), as any program may for its own agents.
  Its spend (kernel/observe/quotas.py Spend: tokens used, reservations in flight, the bucket's level) is kept here
  under (principal, agent name), and a later hello of the same principal and name continues it: the gateway
  reconnecting after the kernel connection dropped, or restarted, finds its key's total where it left it. Connections
  of one holder at the same time share one spend; each is held to the limits of its own hello (the kernel's defaults
  lowered by what it asked for). The principal comes from the connection (never from the hello), so no one spends or
  resets another principal's budget; within a principal, agent names are that principal's own to choose (gateway keys
  naming the same agent share its budget, so a rotated key continues the old one's).
- An agent that asks for nothing is held to the kernel's defaults (aiosd --quota-*) per connection, as that flag
  documents ("while it is connected"): the default is a per-agent limit, not a per-principal budget; a fresh
  connection is a fresh agent.

Bounds: at most MAX_PER_PRINCIPAL holders per principal and MAX_HOLDERS in all (as accounting bounds principals); past
either the holder whose last hello is oldest (of that principal first) is forgotten. A connected agent keeps using a
forgotten spend; only a later hello under that name starts anew. Lost when the kernel restarts (nothing on disk).

On the loop's thread only (hello runs there); no clock of its own (the Quota's), O(1) per hello.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

from kernel.observe.quotas import Quota, QuotaPolicy, Spend

MAX_HOLDERS = 4096
MAX_PER_PRINCIPAL = 1024


class QuotaBook:
    def __init__(self, max_holders: int = MAX_HOLDERS, max_per_principal: int = MAX_PER_PRINCIPAL):
        if max_holders < 1 or max_per_principal < 1:
            raise ValueError("max_holders and max_per_principal must be positive")
        self.max_holders, self.max_per_principal = max_holders, max_per_principal
        self._holders: collections.OrderedDict[tuple[str, str], Spend] = collections.OrderedDict()  # oldest first
        self._of_principal: dict[str, collections.OrderedDict[str, None]] = {}  # principal -> names, oldest first

    def __len__(self) -> int:
        return len(self._holders)

    def quota(
        self,
        policy: QuotaPolicy,
        principal: str,
        name: str,
        asked_per_minute: int | None,
        asked_total: int | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Quota:
        """The Quota of a hello: continuing the holder's spend if the agent asked for a quota, else a fresh one."""
        if asked_per_minute is None and asked_total is None:
            return policy.for_agent(None, None, clock)
        return policy.for_agent(asked_per_minute, asked_total, clock, self._spend(principal, name, clock))

    def spend_of(self, principal: str, name: str) -> Spend | None:
        return self._holders.get((principal, name))

    def _spend(self, principal: str, name: str, clock: Callable[[], float]) -> Spend:
        key = (principal, name)
        names = self._of_principal.setdefault(principal, collections.OrderedDict())
        spend = self._holders.get(key)
        if spend is not None:
            self._holders.move_to_end(key)
            names.move_to_end(name)
            return spend
        if len(names) >= self.max_per_principal:
            self._forget(principal, next(iter(names)))
        elif len(self._holders) >= self.max_holders:
            self._forget(*next(iter(self._holders)))
        spend = Spend(updated=clock(), kept=True)
        self._holders[key] = spend
        self._of_principal.setdefault(principal, collections.OrderedDict())[name] = None
        return spend

    def _forget(self, principal: str, name: str) -> None:
        self._holders.pop((principal, name)).kept = False  # a connection still using it sees it is no longer kept
        names = self._of_principal[principal]
        del names[name]
        if not names:
            del self._of_principal[principal]
