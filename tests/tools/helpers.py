"""Shared bits of the tool tests: a config for the misbehaving test server, a bounded wait on a call, and the host's
view of a server's process tree (a sandboxed server reports pids of its own PID namespace)."""

from __future__ import annotations

import os

from ipc.errors import ProtocolError
from kernel.tools.config import ServerConfig

# Generous: the futures resolve as soon as the manager answers; this only bounds a broken run.
WAIT_S = 120


def misc_server(name: str = "misc", **options) -> ServerConfig:
    return ServerConfig(name=name, command=["python", "-m", "tests.tools.servers.misc"], **options)


def result(future):
    return future.result(WAIT_S)


def error_of(future) -> ProtocolError:
    error = future.exception(WAIT_S)
    assert isinstance(error, ProtocolError), error
    return error


def process_tree(root: int) -> set[int]:
    """root and its descendants, as the host sees them."""
    parents = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
    tree, grew = {root}, True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree, grew = tree | found, bool(found)
    return tree
