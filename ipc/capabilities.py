"""Capabilities by name: what an agent may do beyond acting on itself and the agents it owns.

Part of the protocol (access.grant names them, the syscall table says which syscall needs which), so they sit here,
below both the kernel and the SDK; what a capability allows, who holds one and how it is checked are
kernel/access/'s (capabilities.py). Besides these, "tool:NAME" strings grant one restricted tool (TOOL_PREFIX).
"""

from __future__ import annotations

import enum

TOOL_PREFIX = "tool:"  # "tool:NAME": the right to call one restricted tool


class Capability(str, enum.Enum):
    PROC_VIEW = "proc.view"  # list every agent and its requests
    PROC_KILL = "proc.kill"  # kill any agent
    PROC_RENICE = "proc.renice"  # set any agent's priority
    GRANT = "access.grant"  # mint grant tokens carrying a subset of one's own capabilities
    MEM_ANY = "mem.any"  # read and write any owner's memory space
    FS_ANY = "fs.any"  # read and write any owner's file space
    TOOL_ANY = "tool.any"  # call every tool, restricted ones included ("tool:NAME" grants one)
    TOOL_APPROVE = "tool.approve"  # list and decide calls of irreversible tools held for approval
