"""The `kernel.top` syscall as the operator's views send it, for either SDK client.

top_request(limit) is the Request both the sync Kernel (`aios top`) and the AsyncKernel (the gateway's /ui) hand to
their `_run`: it answers the snapshot dict whose schema kernel/observe/top.py's docstring gives (version 1). The
views read it with .get() and defaults, so a kernel that adds fields, or lacks one, still draws.
"""

from __future__ import annotations

from ipc.messages import MAX_LISTED, Top
from sdk.protocol import Request

SYSCALL = "kernel.top"


def top_request(limit: int = MAX_LISTED) -> Request:
    if not 1 <= limit <= MAX_LISTED:
        raise ValueError(f"kernel.top lists 1..{MAX_LISTED} agents and requests, got {limit}")
    return Request(SYSCALL, Top(limit=limit), _snapshot)


def _snapshot(reply) -> dict:
    return reply.snapshot
