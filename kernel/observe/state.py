"""What the kernel keeps for the operator's view, in one place the loop, the LLM service and the dispatch table share:
the accounting, the quota policy and the quota book (kernel/observe/quota_book.py: spends kept per principal and
agent name), recent rates, tool calls in flight, and when the kernel started.

Made once per kernel loop (never module state); every part is updated on the loop's thread, except ToolEvents.ended,
which the tool manager's thread calls (see kernel/observe/accounting.py), and the SpaceCounts the service workers
publish (kernel/observe/spaces.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from kernel.observe.accounting import Accounting, ToolEvents
from kernel.observe.quota_book import QuotaBook
from kernel.observe.quotas import Quota, QuotaPolicy
from kernel.observe.rates import Rates
from kernel.observe.spaces import SpaceCounts


@dataclass
class Observation:
    quotas: QuotaPolicy = field(default_factory=QuotaPolicy)
    accounting: Accounting = field(default_factory=Accounting)
    rates: Rates = field(default_factory=Rates)
    tools: ToolEvents = field(default_factory=lambda: ToolEvents(time.monotonic))
    started: float = field(default_factory=time.monotonic)
    spaces: SpaceCounts = field(default_factory=SpaceCounts)
    quota_book: QuotaBook = field(default_factory=QuotaBook)

    def quota_for(self, principal: str, name: str, asked_per_minute: int | None, asked_total: int | None) -> Quota:
        """A hello's quota: the kernel's defaults lowered by what it asked for, continuing a kept spend if it asked."""
        return self.quota_book.quota(self.quotas, principal, name, asked_per_minute, asked_total)
