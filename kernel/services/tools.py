"""tool.list, tool.call, tool.pending, tool.approve: the kernel's side of the tool manager (kernel/tools/).

On the loop: which tools an agent may see and call (every tool but the restricted ones — by default run_python, which
runs code — plus those granted to it as "tool:NAME" (`aios run --grant tool:run_python`), or all with tool.any),
arguments handed over as given (the manager validates them against the tool's schema before its server sees them), and
calls of irreversible tools held for the operator: `aios approve ID` / `aios deny ID` (tool.approve, needs
tool.approve), denied when no decision comes within approval_timeout_s, or decided by a configured policy ("allow" or
"deny" instead of "ask"). Every decision is audited. The manager runs calls on its own thread; their results come back
through a reply worker with its own outbox, never through the loop.
"""
from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass

from ipc.errors import ErrorCode, ProtocolError
from ipc.messages import Ack
from ipc.service_messages import PendingApproval, PendingApprovals, ToolInfo, ToolListing, ToolOutput
from kernel.access.capabilities import Capability
from kernel.services.syscalls import space_of
from kernel.services.worker import Job, ServiceWorker

APPROVAL_POLICIES = ("ask", "allow", "deny")
DEFAULT_RESTRICTED = frozenset({"run_python"})
MAX_PENDING = 256


@dataclass
class _Held:
    approval_id: str
    agent: object
    identity: bytes
    req_id: int | str
    tool: str
    arguments: dict
    context: dict
    since: float


class ToolService:
    def __init__(self, manager, replies: ServiceWorker, audit, approval: str = "ask",
                 approval_timeout_s: float = 300.0, restricted: frozenset[str] = DEFAULT_RESTRICTED):
        if approval not in APPROVAL_POLICIES:
            raise ValueError(f"tool approval policy must be one of {APPROVAL_POLICIES}, got {approval!r}")
        self.manager, self.replies, self.audit = manager, replies, audit
        self.approval, self.approval_timeout_s, self.restricted = approval, approval_timeout_s, restricted
        self._held: dict[str, _Held] = {}
        self._ids = itertools.count(1)

    def handlers(self) -> dict:
        return {"tool.list": self.list, "tool.call": self.call, "tool.pending": self.pending,
                "tool.approve": self.approve}

    # -- handlers (call: kernel.daemon.dispatch.Call) --------------------------------------------------------------

    def list(self, call, body) -> ToolListing:
        return ToolListing(tools=[ToolInfo(name=t.name, description=t.description or "", input_schema=t.input_schema,
                                           irreversible=bool(t.irreversible))
                                  for t in self.manager.list_tools() if self._may_use(call.agent, t)])

    def call(self, call, body) -> None:
        spec = next((t for t in self.manager.list_tools() if t.name == body.name), None)
        if spec is None or not self._may_use(call.agent, spec):
            if spec is not None:
                self.audit.record(agent=call.agent, syscall="tool.call", decision="deny", target=body.name,
                                  reason="tool not allowed for this agent")
                raise ProtocolError(ErrorCode.DENIED, f"tool {body.name!r} is not allowed for this agent")
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no tool named {body.name!r}")
        context = {"space": space_of(call.agent), "agent_id": call.agent.agent_id}
        identity, req_id = call.item.identity, call.item.envelope.req_id
        if not spec.irreversible or self.approval == "allow":
            if spec.irreversible:
                self.audit.record(agent=call.agent, syscall="tool.call", decision="allow", target=body.name,
                                  reason="irreversible tool; approval policy allow")
            self._run(identity, req_id, body.name, body.arguments, context)
            return
        if self.approval == "deny":
            self.audit.record(agent=call.agent, syscall="tool.call", decision="deny", target=body.name,
                              reason="irreversible tool; approval policy deny")
            raise ProtocolError(ErrorCode.DENIED,
                                f"tool {body.name!r} is irreversible and the kernel's policy denies it")
        if len(self._held) >= MAX_PENDING:
            raise ProtocolError(ErrorCode.BUSY, "too many tool calls are waiting for approval")
        approval_id = f"p{next(self._ids)}"
        self._held[approval_id] = _Held(approval_id, call.agent, identity, req_id, body.name, body.arguments, context,
                                        time.monotonic())

    def pending(self, call, body) -> PendingApprovals:
        self._require(call, "tool.pending")
        now = time.monotonic()
        return PendingApprovals(pending=[
            PendingApproval(approval_id=h.approval_id, agent_id=h.agent.agent_id, agent_name=h.agent.name, tool=h.tool,
                            arguments=json.dumps(h.arguments)[:500], waiting_s=round(now - h.since, 1))
            for h in self._held.values()])

    def approve(self, call, body) -> Ack:
        self._require(call, "tool.approve")
        held = self._held.pop(body.approval_id, None)
        if held is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no tool call {body.approval_id!r} is waiting for approval")
        self._decide(held, body.allow, f"{'approved' if body.allow else 'denied'} by {call.agent.agent_id}")
        return Ack()

    # -- mechanism -------------------------------------------------------------------------------------------------

    def tick(self) -> None:
        """Deny held calls whose approval did not come in time (called by the loop every iteration)."""
        now = time.monotonic()
        for held in [h for h in self._held.values() if now - h.since > self.approval_timeout_s]:
            del self._held[held.approval_id]
            self._decide(held, False, f"no approval within {self.approval_timeout_s:.0f} s")

    def agent_ended(self, agent) -> None:
        for held in [h for h in self._held.values() if h.agent is agent]:
            del self._held[held.approval_id]

    def _decide(self, held: _Held, allow: bool, reason: str) -> None:
        self.audit.record(agent=held.agent, syscall="tool.call", decision="allow" if allow else "deny",
                          target=held.tool, reason=f"irreversible tool {reason} ({held.approval_id})")
        if allow:
            self._run(held.identity, held.req_id, held.tool, held.arguments, held.context)
        else:
            error = ProtocolError(ErrorCode.DENIED, f"tool call {held.approval_id} to {held.tool!r}: {reason}")
            self.replies.submit(Job(held.identity, held.req_id, lambda _: _raise(error)))

    def _run(self, identity: bytes, req_id, tool: str, arguments: dict, context: dict) -> None:
        future = self.manager.call(tool, arguments, context)
        # runs on the manager's thread: hand the outcome to the reply worker, whose outbox answers the agent
        future.add_done_callback(lambda done: self._reply(identity, req_id, done))

    def _reply(self, identity: bytes, req_id, done) -> None:
        def answer(_):
            result = done.result()            # re-raises the call's ProtocolError for the worker to answer
            return ToolOutput(text=result.text, is_error=bool(result.is_error), truncated=bool(result.truncated))
        try:
            self.replies.submit(Job(identity, req_id, answer))
        except ProtocolError:                 # the reply worker's queue is full: the agent's call times out
            pass

    def _may_use(self, agent, spec) -> bool:
        caps = agent.capabilities
        return spec.name not in self.restricted or Capability.TOOL_ANY in caps or f"tool:{spec.name}" in caps

    def _require(self, call, syscall: str) -> None:
        if Capability.TOOL_APPROVE not in call.agent.capabilities:
            self.audit.record(agent=call.agent, syscall=syscall, decision="deny", reason="lacks tool.approve")
            raise ProtocolError(ErrorCode.DENIED, f"{syscall} needs the tool.approve capability (the operator's)")


def _raise(error: Exception):
    raise error
