"""tool.list, tool.call, tool.pending, tool.approve: the kernel's side of the tool manager (kernel/tools/).

On the loop: which tools an agent may see and call (every tool but the restricted ones — by default run_python, which
runs code — plus those granted to it as "tool:NAME" (`aios run --grant tool:run_python`), or all with tool.any),
arguments handed over as given (the manager validates them against the tool's schema before its server sees them), and
calls of irreversible tools held for the operator: `aios approve ID` / `aios deny ID` (tool.approve; it and
tool.pending need the tool.approve capability, which the syscall table names and the dispatcher checks), denied when
no decision comes within approval_timeout_s, or decided by a configured policy ("allow" or "deny" instead of "ask").
Every decision is audited, through kernel/access/gate.py. The manager runs calls on its own thread; their results
come back through a reply worker with its own outbox, never through the loop.

Which tools an agent may call is decided in one place, permits(): tool.list, tool.call and the early start of a
call the model is still writing (kernel/services/early_start.py, `early=True`) all ask it. A tool.call that matches a
call started early (same agent, tool and canonical arguments) is answered by that run instead of a second one.

Held calls are bounded: MAX_PENDING_PER_AGENT per agent and MAX_PENDING in all, and the bytes their arguments hold
(estimated once at hold time: string and bytes lengths plus NODE_BYTES per value) MAX_HELD_BYTES_PER_AGENT per agent and
MAX_HELD_BYTES in all; past any bound the call answers BUSY. Arguments the operator could not be shown in full are
refused (BAD_REQUEST): more than MAX_HELD_ARGUMENTS, a name longer than MAX_NAME_CHARS, more than MAX_HELD_VALUES
values. The operator's view is built once at hold time: every argument name with its value cut to VALUE_CHARS, in the
order of the tool's schema, so `tool.pending` only copies bounded strings. Approval ids are "p<8 random hex of this
boot>-<n>": never reused across restarts.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from dataclasses import dataclass

from ipc.errors import ErrorCode, ProtocolError
from ipc.messages import Ack
from ipc.service_messages import PendingApproval, PendingApprovals, ToolInfo, ToolListing, ToolOutput
from kernel.access.audit import Decision
from kernel.access.capabilities import Capability
from kernel.access.gate import Gate
from kernel.services.early_start import EarlyStarts
from kernel.services.worker import Job, ServiceWorker

APPROVAL_POLICIES = ("ask", "allow", "deny")
DEFAULT_RESTRICTED = frozenset({"run_python"})
MAX_PENDING = 256
MAX_PENDING_PER_AGENT = 8
MAX_HELD_BYTES = 16 << 20
MAX_HELD_BYTES_PER_AGENT = 4 << 20
MAX_HELD_ARGUMENTS = 32
MAX_NAME_CHARS = 64
MAX_HELD_VALUES = 4096  # values in a held call's arguments: bounds the loop's walk to measure them
VALUE_CHARS = 240  # of each argument value in the operator's view
NODE_BYTES = 64  # what the kernel holds per decoded value beyond its characters (a Python object)
MAX_DISPLAY_DEPTH = 4


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
    size: int  # estimated bytes its arguments hold
    display: str  # the operator's view of its arguments, built once


class ToolService:
    def __init__(
        self,
        manager,
        replies: ServiceWorker,
        audit,
        approval: str = "ask",
        approval_timeout_s: float = 300.0,
        restricted: frozenset[str] = DEFAULT_RESTRICTED,
        *,
        max_pending: int = MAX_PENDING,
        max_pending_per_agent: int = MAX_PENDING_PER_AGENT,
        max_held_bytes: int = MAX_HELD_BYTES,
        max_held_bytes_per_agent: int = MAX_HELD_BYTES_PER_AGENT,
        observer=None,
        early: bool = True,
    ):
        if approval not in APPROVAL_POLICIES:
            raise ValueError(f"tool approval policy must be one of {APPROVAL_POLICIES}, got {approval!r}")
        self.manager, self.replies = manager, replies
        self.gate = Gate(audit)  # which tool an agent may call, and approvals: decided and audited through it
        self.approval, self.approval_timeout_s, self.restricted = approval, approval_timeout_s, restricted
        self.max_pending, self.max_pending_per_agent = max_pending, max_pending_per_agent
        self.max_held_bytes, self.max_held_bytes_per_agent = max_held_bytes, max_held_bytes_per_agent
        self._held: dict[str, _Held] = {}  # in the order held: the oldest first (timeouts check the front)
        self._by_agent: dict[str, list[int]] = {}  # agent id -> [calls held, bytes held]
        self._held_bytes = 0
        self._boot = secrets.token_hex(4)  # ids of this kernel's run never collide with an earlier run's
        self._ids = itertools.count(1)
        self.space_of = None  # agent -> its own space: set by ServiceSyscalls, which names them
        # told when an agent starts and stops waiting on a tool (the context manager: a waiting agent's KV is kept
        # for its return); tool_finished comes from the tool manager's thread
        self.observer = observer
        self.events = None  # kernel/observe/accounting.py ToolEvents: calls in flight and their outcomes, if watched
        self.early = EarlyStarts(self) if early else None  # calls started as the model writes them, held for claims

    def handlers(self) -> dict:
        return {
            "tool.list": self.list,
            "tool.call": self.call,
            "tool.pending": self.pending,
            "tool.approve": self.approve,
        }

    # -- handlers (call: the loop's Call: .item, .agent, .now, and .syscall, the call's row in the table) ----------

    def list(self, call, body) -> ToolListing:
        return ToolListing(
            tools=[
                ToolInfo(
                    name=t.name,
                    description=t.description or "",
                    input_schema=t.input_schema,
                    irreversible=bool(t.irreversible),
                )
                for t in self.manager.list_tools()
                if self.permits(call.agent, t)
            ]
        )

    def call(self, call, body) -> None:
        spec = next((t for t in self.manager.list_tools() if t.name == body.name), None)
        if spec is None or not self.permits(call.agent, spec):
            if spec is not None:
                self.gate.deny(
                    call.agent,
                    "tool.call",
                    f"tool {body.name!r} is not allowed for this agent",
                    target=body.name,
                    reason="tool not allowed for this agent",
                )
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no tool named {body.name!r}")
        context = self.context_of(call.agent)
        identity, req_id = call.item.identity, call.item.envelope.req_id
        if not spec.irreversible or self.approval == "allow":
            if spec.irreversible:
                self.gate.allow(
                    call.agent, "tool.call", target=body.name, reason="irreversible tool; approval policy allow"
                )
            elif self.early is not None and self.early.claim(call.agent, body.name, body.arguments, identity, req_id):
                return  # answered by the run started as the model wrote this call
            self._run(identity, req_id, body.name, body.arguments, context)
            return
        if self.approval == "deny":
            self.gate.deny(
                call.agent,
                "tool.call",
                f"tool {body.name!r} is irreversible and the kernel's policy denies it",
                target=body.name,
                reason="irreversible tool; approval policy deny",
            )
        self._hold(call.agent, identity, req_id, spec, body.arguments, context)

    def pending(self, call, body) -> PendingApprovals:  # tool.approve: the table's
        return PendingApprovals(pending=self.held_calls())

    def held_calls(self) -> list[PendingApproval]:
        """The calls waiting for the operator, oldest first (at most max_pending: each a bounded summary)."""
        now = time.monotonic()
        return [
            PendingApproval(
                approval_id=h.approval_id,
                agent_id=h.agent.agent_id,
                agent_name=h.agent.name,
                tool=h.tool,
                arguments=h.display,
                waiting_s=round(now - h.since, 1),
            )
            for h in self._held.values()
        ]

    def approve(self, call, body) -> Ack:  # tool.approve: the table's; the decision is audited in _decide
        held = self._held.get(body.approval_id)
        if held is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no tool call {body.approval_id!r} is waiting for approval")
        self._release(held)
        self._decide(held, body.allow, f"{'approved' if body.allow else 'denied'} by {call.agent.agent_id}")
        return Ack()

    # -- mechanism -------------------------------------------------------------------------------------------------

    def tick(self) -> None:
        """Deny held calls whose approval did not come in time, let early runs nobody claimed go (called by the loop
        every iteration)."""
        if self.early is not None:
            self.early.tick()
        now = time.monotonic()
        while self._held:
            held = next(iter(self._held.values()))
            if now - held.since <= self.approval_timeout_s:
                return
            self._release(held)
            self._decide(held, False, f"no approval within {self.approval_timeout_s:.0f} s")

    def agent_ended(self, agent) -> None:
        if self.early is not None:
            self.early.agent_ended(agent)
        if agent.agent_id not in self._by_agent:
            return
        for held in [h for h in self._held.values() if h.agent is agent]:
            self._release(held)

    def _hold(self, agent, identity: bytes, req_id, spec, arguments: dict, context: dict) -> None:
        """Hold a call for the operator, or BUSY past a bound (BAD_REQUEST for arguments the view cannot show)."""
        if len(arguments) > MAX_HELD_ARGUMENTS or any(
            not isinstance(name, str) or len(name) > MAX_NAME_CHARS for name in arguments
        ):
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"a call held for approval takes at most {MAX_HELD_ARGUMENTS} "
                f"arguments, with names of at most {MAX_NAME_CHARS} characters",
            )
        calls, held_bytes = self._by_agent.get(agent.agent_id, (0, 0))
        if len(self._held) >= self.max_pending or calls >= self.max_pending_per_agent:
            raise ProtocolError(
                ErrorCode.BUSY,
                f"too many tool calls are waiting for approval (at most "
                f"{self.max_pending_per_agent} per agent, {self.max_pending} in all)",
            )
        room = min(self.max_held_bytes_per_agent - held_bytes, self.max_held_bytes - self._held_bytes)
        size, values = held_size(arguments, room)
        if values > MAX_HELD_VALUES:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"a call held for approval takes at most {MAX_HELD_VALUES} values in its arguments",
            )
        if size > room:
            raise ProtocolError(
                ErrorCode.BUSY,
                f"the arguments of calls waiting for approval would pass "
                f"{self.max_held_bytes_per_agent >> 20} MiB per agent or "
                f"{self.max_held_bytes >> 20} MiB in all",
            )
        approval_id = f"p{self._boot}-{next(self._ids)}"
        order = list(spec.input_schema.get("properties", {})) if isinstance(spec.input_schema, dict) else []
        self._held[approval_id] = _Held(
            approval_id,
            agent,
            identity,
            req_id,
            spec.name,
            arguments,
            context,
            time.monotonic(),
            size,
            display(arguments, order),
        )
        self._by_agent[agent.agent_id] = [calls + 1, held_bytes + size]
        self._held_bytes += size

    def _release(self, held: _Held) -> None:
        del self._held[held.approval_id]
        self._held_bytes -= held.size
        counts = self._by_agent[held.agent.agent_id]
        counts[0] -= 1
        counts[1] -= held.size
        if not counts[0]:
            del self._by_agent[held.agent.agent_id]

    def _decide(self, held: _Held, allow: bool, reason: str) -> None:
        self.gate.record(
            held.agent,
            "tool.call",
            Decision.ALLOW if allow else Decision.DENY,
            target=held.tool,
            reason=f"irreversible tool {reason} ({held.approval_id})",
            privileged=True,
        )  # the operator's decision (or its timeout): kept whatever it was
        if allow:
            self._run(held.identity, held.req_id, held.tool, held.arguments, held.context)
        else:
            error = ProtocolError(ErrorCode.DENIED, f"tool call {held.approval_id} to {held.tool!r}: {reason}")
            self.replies.submit(Job(held.identity, held.req_id, lambda _: _raise(error)))

    def _run(self, identity: bytes, req_id, tool: str, arguments: dict, context: dict) -> None:
        self.await_result(identity, req_id, context["agent_id"], tool, self.manager.call(tool, arguments, context))

    def await_result(self, identity: bytes, req_id, agent_id: str, tool: str, future) -> None:
        """Answer the agent's call with future's outcome; from now the agent waits on the tool (accounting, the
        context observer)."""
        if self.observer is not None:
            self.observer.tool_started(agent_id, tool)
        ticket = self.events.started(agent_id, tool) if self.events is not None else None
        # runs on the manager's thread (or here, if it is done): hand the outcome to the reply worker, whose outbox
        # answers the agent
        future.add_done_callback(lambda done: self._done(agent_id, tool, identity, req_id, done, ticket))

    def context_of(self, agent) -> dict:
        """What the manager may inject into a call of this agent's."""
        return {"space": self.space_of(agent), "agent_id": agent.agent_id}

    def _done(self, agent_id: str, tool: str, identity: bytes, req_id, done, ticket: int | None = None) -> None:
        if self.observer is not None:
            self.observer.tool_finished(agent_id, tool)
        if ticket is not None:
            self.events.ended(ticket, _failed(done))
        self._reply(identity, req_id, done)

    def _reply(self, identity: bytes, req_id, done) -> None:
        def answer(_):
            result = done.result()  # re-raises the call's ProtocolError for the worker to answer
            return ToolOutput(text=result.text, is_error=bool(result.is_error), truncated=bool(result.truncated))

        try:
            self.replies.submit(Job(identity, req_id, answer))
        except ProtocolError:  # the reply worker's queue is full: the agent's call times out
            pass

    def permits(self, agent, spec) -> bool:
        """Whether agent may call the tool: every tool but the restricted ones, which need "tool:NAME" or tool.any.
        The one check (tool.list, tool.call, early starts); tool.call audits its refusals through the gate."""
        caps = agent.capabilities
        return spec.name not in self.restricted or Capability.TOOL_ANY in caps or f"tool:{spec.name}" in caps


def _raise(error: Exception):
    raise error


def _failed(done) -> bool:
    """Whether a finished tool call failed (an error reply, or a result flagged as an error)."""
    if done.cancelled() or done.exception() is not None:
        return True
    return bool(getattr(done.result(), "is_error", False))


def held_size(value, limit: int, max_values: int = MAX_HELD_VALUES) -> tuple[int, int]:
    """(bytes, values) the kernel holds for a decoded value, estimated: characters plus NODE_BYTES per value. A
    container is charged for its elements before they are visited and the walk stops once past limit or max_values,
    so it costs at most max_values steps whatever the value."""
    total, count, stack = NODE_BYTES, 1, [value]
    while stack and total <= limit and count <= max_values:
        item = stack.pop()
        if isinstance(item, (str, bytes, bytearray)):
            total += len(item)
        elif isinstance(item, (dict, list, tuple)):
            size = 2 * len(item) if isinstance(item, dict) else len(item)
            total, count = total + size * NODE_BYTES, count + size
            if total <= limit and count <= max_values:
                stack.extend(item.keys() if isinstance(item, dict) else item)
                stack.extend(item.values() if isinstance(item, dict) else ())
    return total, count


def display(arguments: dict, order: list[str]) -> str:
    """name=value for every argument (the schema's order first, then the rest by name), each value cut to
    VALUE_CHARS: a long value never hides another argument."""
    names = [n for n in order if n in arguments] + sorted(n for n in arguments if n not in order)
    # names and strings escaped as JSON (ASCII): no control or bidi character reaches the operator's terminal raw
    return ", ".join(f"{json.dumps(name)[1:-1]}={_brief(arguments[name], VALUE_CHARS, 0)}" for name in names)


def _brief(value, budget: int, depth: int) -> str:
    """A JSON-like rendering of value in about budget characters (cut values say how long they were)."""
    if isinstance(value, str):
        if len(value) <= budget:
            return json.dumps(value)
        return json.dumps(value[:budget])[:-1] + f'..." ({len(value)} chars)'
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value)[:budget]
    if not isinstance(value, (dict, list, tuple)):
        return f"<{type(value).__name__}>"
    is_map = isinstance(value, dict)
    if depth >= MAX_DISPLAY_DEPTH:
        return f"{{{len(value)} keys}}" if is_map else f"[{len(value)} items]"
    parts, used = [], 2
    for index, item in enumerate(value.items() if is_map else value):
        if used >= budget:
            parts.append(f"... ({len(value) - index} more)")
            break
        part = (
            f"{_brief(item[0], min(MAX_NAME_CHARS, budget - used), depth + 1)}: "
            f"{_brief(item[1], budget - used, depth + 1)}"
            if is_map
            else _brief(item, budget - used, depth + 1)
        )
        parts.append(part)
        used += len(part) + 2
    return ("{" if is_map else "[") + ", ".join(parts) + ("}" if is_map else "]")
