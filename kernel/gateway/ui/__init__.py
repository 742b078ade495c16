"""The operator's dashboard, served by the gateway at /ui: agents and their requests, the scheduler's queue, KV and
snapshot arena use, tools in flight, approvals waiting (approve or deny from the page, through the kernel's
tool.approve, so the kernel audits it), memory and file use per space, and live plots of tokens/s, time to first
token and queue length.

install(app, address, keyring, pool, interval_s) mounts it: routes in routes.py, who may see it in access.py, the
one kernel.top call per interval in feed.py, the dashboard's own operator connection in operator.py, login sessions
in sessions.py. The page is static/index.html with static/app.js (tables, SSE) and static/plots.js (canvas plots
drawn from a ring buffer in the page): plain files, no build step, served from the package. close() ends the
operator connection (the app's lifespan calls it).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI

from ipc.messages import MAX_LISTED
from kernel.gateway.agents import AgentPool
from kernel.gateway.keys import KeyRing
from kernel.gateway.ui.access import Access
from kernel.gateway.ui.feed import SnapshotFeed
from kernel.gateway.ui.operator import OperatorLink
from kernel.gateway.ui.routes import PREFIX, router
from kernel.gateway.ui.sessions import Sessions

DEFAULT_INTERVAL_S = 1.0

__all__ = ["PREFIX", "Dashboard", "install", "DEFAULT_INTERVAL_S"]


@dataclass
class Dashboard:
    feed: SnapshotFeed
    link: OperatorLink
    access: Access

    async def close(self) -> None:
        await self.link.close()


def install(
    app: FastAPI,
    address: str,
    keyring: KeyRing | None,
    pool: AgentPool,
    interval_s: float = DEFAULT_INTERVAL_S,
) -> Dashboard:
    link = OperatorLink(address, MAX_LISTED)
    dashboard = Dashboard(SnapshotFeed(link.top, interval_s), link, Access(keyring, Sessions()))
    app.include_router(router(dashboard.access, dashboard.feed, link, pool))
    return dashboard
