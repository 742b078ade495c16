"""Capabilities: what an agent may do beyond acting on itself and the agents it owns.

Without any capability an agent sees and acts on its own agents only: itself, other connections of its own process,
and agents running in processes it started (descendants of its process: an orchestrator and its sub-agents), all under
the same principal. Everything else needs a capability, held by the operator (the admin token in the runtime
directory, which the `aios` CLI presents) or granted at launch (`aios run --grant CAP`: a grant token minted by a
holder of access.grant, carrying a subset of the granter's own capabilities).
"""

from __future__ import annotations

import enum

MAX_ANCESTRY = 64  # process tree depth searched for ownership


class Capability(str, enum.Enum):
    PROC_VIEW = "proc.view"  # list every agent and its requests
    PROC_KILL = "proc.kill"  # kill any agent
    PROC_RENICE = "proc.renice"  # set any agent's priority
    GRANT = "access.grant"  # mint grant tokens carrying a subset of one's own capabilities
    MEM_ANY = "mem.any"  # read and write any owner's memory space
    FS_ANY = "fs.any"  # read and write any owner's file space
    TOOL_ANY = "tool.any"  # call every tool, restricted ones included ("tool:NAME" grants one)
    TOOL_APPROVE = "tool.approve"  # list and decide calls of irreversible tools held for approval


ALL = frozenset(Capability)


TOOL_PREFIX = "tool:"  # "tool:NAME": the right to call one restricted tool


def parse(names: list[str]) -> frozenset:
    """Capabilities by name (Capability members, and "tool:NAME" strings); ValueError naming an unknown one."""
    known = {c.value: c for c in Capability}
    unknown = [n for n in names if n not in known and not (n.startswith(TOOL_PREFIX) and len(n) > len(TOOL_PREFIX))]
    if unknown:
        raise ValueError(f"unknown capability {unknown[0][:32]!r}; known: {', '.join(sorted(known))}, tool:NAME")
    return frozenset(known.get(n, n) for n in names)


def holds(held: frozenset, capability) -> bool:
    """Whether `held` includes `capability` (tool.any includes every "tool:NAME")."""
    return capability in held or (
        isinstance(capability, str)
        and not isinstance(capability, Capability)
        and capability.startswith(TOOL_PREFIX)
        and Capability.TOOL_ANY in held
    )


def parent_pid(pid: int) -> int | None:
    """The parent of a live process on this host (from /proc), None if it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # the command name (field 2) is in parentheses and may hold spaces or ')': parse after the last ')'
            return int(stat.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def is_same_or_descendant(pid: int, ancestor: int) -> bool:
    for _ in range(MAX_ANCESTRY):
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
        parent = parent_pid(pid)
        if parent is None:
            return False
        pid = parent
    return False
