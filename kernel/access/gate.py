"""The gate: every authorization decision the kernel makes about a syscall, and its audit record, made one way.

Two kinds of decision go through here. The syscall table's capability (ipc/syscalls.py: what a syscall needs whatever
its arguments) is checked once by the kernel loop's dispatcher before any handler runs: require(). Rights that depend
on a call's arguments — whose agent (proc.kill, proc.set_priority), whose space (mem.*, fs.*), which tool
(tool.call), which capabilities (access.grant), how high a priority — are decided by the handler that reads them,
with require() for "needs this capability", used() when a capability let the call through, and allow() / deny() /
record() for decisions of their own (a share given, an approval decided, a priority above the ceiling).

Audit records (kernel/access/audit.py) have one shape: the caller, the syscall, the target (an agent id, a space, a
tool, capabilities), the decision, and a reason: "holds CAP" / "lacks CAP" for capability decisions, the handler's
words otherwise. A denial is always recorded (rate-limited per principal by the audit log); an allow only where a
capability was used or a privileged change was made — passing the table's check is not recorded by itself, since
the call may still be refused on its arguments, and a read-only view (kernel.top, tool.pending) changes nothing.

Refuses: deny() and a failed require() raise ProtocolError(permission_denied) with the message given; nothing else.
"""

from __future__ import annotations

from typing import NoReturn

from ipc.capabilities import Capability
from ipc.errors import ErrorCode, ProtocolError
from kernel.access.audit import AuditLog, Decision


class Gate:
    def __init__(self, audit: AuditLog):
        self.audit = audit

    def require(self, agent, syscall: str, capability: Capability, *, target: str | None = None, message: str = ""):
        """Pass if the agent holds the capability; else deny (audited, "lacks CAP") with message (default: which
        capability the syscall needs). Passing records nothing: see used()."""
        if capability not in agent.capabilities:
            self.deny(
                agent,
                syscall,
                message or f"{syscall} needs the {capability.value} capability",
                target=target,
                reason=f"lacks {capability.value}",
            )

    def used(self, agent, syscall: str, capability: Capability, *, target: str | None = None) -> None:
        """Record that a capability let this call act on someone else's target (allow, "holds CAP")."""
        self.allow(agent, syscall, target=target, reason=f"holds {capability.value}")

    def allow(self, agent, syscall: str, *, target: str | None = None, reason: str = "", privileged=None) -> None:
        self.record(agent, syscall, Decision.ALLOW, target=target, reason=reason, privileged=privileged)

    def deny(self, agent, syscall: str, message: str, *, target: str | None = None, reason: str = "") -> NoReturn:
        """Record the denial and refuse the call: ProtocolError(permission_denied, message)."""
        self.record(agent, syscall, Decision.DENY, target=target, reason=reason)
        raise ProtocolError(ErrorCode.DENIED, message)

    def record(
        self, agent, syscall: str, decision: Decision, *, target=None, reason: str = "", privileged=None
    ) -> None:
        """A decision whose refusal is answered elsewhere (a held tool call denied later): recorded, nothing raised.
        privileged: kept in the privileged log whatever it decided (default: allows only)."""
        self.audit.record(
            agent=agent, syscall=syscall, decision=decision, target=target, reason=reason, privileged=privileged
        )
