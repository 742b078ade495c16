"""Capabilities: what an agent may do beyond acting on itself and the agents it owns.

Without any capability an agent sees and acts on its own agents only: itself, other connections of its own process,
and agents running in processes it started (descendants of its process: an orchestrator and its sub-agents), all under
the same principal. Everything else needs a capability, held by the operator (the admin token in the runtime
directory, which the `aios` CLI presents) or granted at launch (`aios run --grant CAP`: a grant token minted by a
holder of access.grant, carrying a subset of the granter's own capabilities). The names themselves are the
protocol's (ipc/capabilities.py); which syscall needs which is the syscall table's (ipc/syscalls.py).
"""

from __future__ import annotations

from ipc.capabilities import TOOL_PREFIX, Capability

MAX_ANCESTRY = 64  # process tree depth searched for ownership


ALL = frozenset(Capability)


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
