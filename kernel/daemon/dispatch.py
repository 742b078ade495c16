"""The dispatcher: the syscall table's door and one handler per syscall, run on the kernel loop's thread.

The door (handle): a syscall not `open` in the table (ipc/syscalls.py) needs a hello first; a syscall this kernel has
no handler for (a service it runs without) answers unknown_type; the table's capability, if any, is checked for the
caller once, here, before the handler runs (a refusal audited, through kernel/access/gate.py). The handlers are this
module's (hello, llm.*, access.grant, kernel.*), procs.py's (proc.*) and the services' (kernel/services/: mem.*, fs.*,
tool.*, access.share); together they must name only syscalls of the table, which is checked when the dispatcher is
built.

Managers answer at once (the handler returns the result body); LLM calls return None and are answered by the LLM
service when they finish. Every syscall gets exactly one final reply: a result, or an error carrying a code. A
handler's exception answers its own call (`internal`), never anyone else's.

Authorization (kernel/access/): hello binds the connection to the principal its peer credentials name and to the
capabilities of the token it presents; then an agent acts on its own requests and on the agents it owns, and needs a
capability for anyone else's (decided by the handler: the target is an argument). Denials answer
`permission_denied`; they and every use of a capability are audited, one way (gate.py).

Priority is a privilege, as at the gateway: an agent may lower its priority freely, but a priority above
DEFAULT_PRIORITY needs proc.renice (held by the operator). Without it, a hello asking for more is refused (not
clamped: the agent learns why it will not run as it asked); proc.set_priority without it may raise an agent (itself,
or one it owns) up to the agent's ceiling only: DEFAULT_PRIORITY, or whatever a holder of proc.renice last set (the
operator's `aios renice`), as Unix lets an unprivileged user only lower a process's nice value. A call's priority
hint counts too: the agent's priority plus the hint of each of its calls stays within the ceiling, at submission and
when the agent later raises its own priority.

Token quotas (kernel/observe/quotas.py) are set at hello: the kernel's defaults, lowered by what the agent asks for;
a quota it asks for continues what its principal's agent of the same name spent (kernel/observe/quota_book.py).
The operator's view, kernel.top and kernel.metrics (kernel/observe/), needs proc.view (the table's), as seeing every
agent in proc.list does; a refusal is audited.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ipc.errors import ErrorCode, ProtocolError
from ipc.messages import (
    DEFAULT_PRIORITY,
    Ack,
    Cancel,
    Grant,
    GrantResult,
    Hello,
    HelloResult,
    KernelMetrics,
    KernelStats,
    KernelTop,
    Top,
)
from ipc.syscalls import BY_NAME, Syscall
from kernel.access import capabilities as caps
from kernel.access.audit import AuditLog
from kernel.access.capabilities import Capability
from kernel.access.gate import Gate
from kernel.access.tokens import TokenRegistry
from kernel.daemon.agents import AgentRecord, AgentTable
from kernel.daemon.inbound import Inbound, Peer
from kernel.daemon.limits import ConnectionBudget
from kernel.daemon.llm import LLMService
from kernel.daemon.procs import ProcSyscalls
from kernel.observe.metrics import metrics as metrics_of
from kernel.observe.top import snapshot as top_of
from kernel.replies import Outbox
from kernel.services.syscalls import ServiceSyscalls

log = logging.getLogger("aiosd.dispatch")


@dataclass(frozen=True)
class Call:
    """One syscall in the loop: its row in the syscall table, who sent it (agent is None before hello) and the kernel
    step it arrived at."""

    item: Inbound
    agent: AgentRecord | None
    now: int
    syscall: Syscall


@dataclass(frozen=True)
class AccessPolicy:
    tokens: TokenRegistry
    audit: AuditLog
    allowed_uids: frozenset[int]  # ipc:// peers of other uids are refused at hello
    budget: ConnectionBudget | None = None  # agents in all and per principal (default: this process's fd limit)


class Syscalls:
    def __init__(
        self,
        agents: AgentTable,
        llm: LLMService,
        outbox: Outbox,
        model_id: str,
        access: AccessPolicy,
        services: ServiceSyscalls | None = None,
    ):
        self.agents = agents
        self.llm = llm
        self.outbox = outbox
        self.model_id = model_id
        self.access = access
        self.services = services
        self.budget = access.budget or ConnectionBudget.for_process()
        self.gate = Gate(access.audit)
        self.observe = llm.observe
        handlers: dict[str, Callable[[Call, Any], Any]] = {
            "hello": self.hello,
            "llm.generate": self.llm_call,
            "llm.chat": self.llm_call,
            "llm.cancel": self.cancel,
            "access.grant": self.grant,
            "kernel.stats": self.stats,
            "kernel.top": self.top,
            "kernel.metrics": self.metrics,
            "kernel.ping": self.ping,
        }
        self.procs = ProcSyscalls(agents, llm, self.gate, self.end_agent)
        handlers |= self.procs.handlers()
        if services is not None:
            handlers |= services.handlers()
        strays = sorted(set(handlers) - set(BY_NAME))
        if strays:  # a handler the table does not declare would run unauthorized, unrouted, undecodable
            raise ValueError(f"handlers for syscalls not in the syscall table: {strays}")
        self.handlers = handlers  # the table's syscalls this kernel serves (without services: not mem.*, fs.*, ...)

    def end_agent(self, agent_id: str, message: str, killed: bool) -> None:
        """Abort an agent's requests (error replies), free its KV, forget it (and an ephemeral agent's spaces)."""
        self.llm.drop_agent(agent_id, ErrorCode.KILLED, message)
        agent = self.agents.remove(agent_id, killed=killed)
        self.observe.accounting.agent_ended(agent_id)
        if agent is not None and self.services is not None:
            self.services.agent_ended(agent)

    def handle(self, item: Inbound, now: int) -> None:
        envelope, identity = item.envelope, item.identity
        agent = self.agents.by_identity(identity)
        if agent is not None:
            agent.last_seen = item.received
        syscall = BY_NAME.get(envelope.type)  # None: a notification (the codec let nothing else through)
        try:
            if agent is None and (syscall is None or not syscall.open):
                # a heartbeat too: an agent waiting on a kernel that restarted learns at once that its call is lost
                if self.agents.was_killed(identity):
                    raise ProtocolError(ErrorCode.KILLED, "this agent was killed")
                raise ProtocolError(
                    ErrorCode.HELLO_REQUIRED,
                    "this connection is not known to the kernel (it may have restarted): say hello first",
                )
            if syscall is None:  # heartbeat: renewing the lease above was all it asked
                return
            handler = self.handlers.get(syscall.name)
            if handler is None:  # a syscall of a service this kernel runs without
                raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"this kernel does not serve {envelope.type}")
            if syscall.capability is not None:  # the table's right, checked (and a refusal audited) once, here
                self.gate.require(agent, syscall.name, syscall.capability)
            result = handler(Call(item, agent, now, syscall), envelope.body)
        except ProtocolError as error:
            self.outbox.fail(identity, envelope.req_id, error)
            return
        except Exception:  # a kernel bug answers this syscall with an error; the kernel keeps serving
            log.exception("syscall %s failed", envelope.type)
            self.outbox.error(identity, envelope.req_id, ErrorCode.INTERNAL, f"{envelope.type} failed in the kernel")
            return
        if result is not None:
            self.outbox.result(identity, envelope.req_id, result)

    # -- handlers --------------------------------------------------------------------------------------------------

    def hello(self, call: Call, body: Hello) -> HelloResult:
        if call.agent is not None:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"already connected as agent {call.agent.agent_id}")
        if self.agents.was_killed(call.item.identity):
            raise ProtocolError(ErrorCode.KILLED, "this connection's agent was killed")
        if not body.name.strip():
            raise ProtocolError(ErrorCode.BAD_REQUEST, "the agent name must not be empty")
        peer = call.item.peer or Peer(address="")
        if peer.uid is not None and peer.uid not in self.access.allowed_uids:
            log.warning("hello refused: peer uid %d (pid %s) is not allowed", peer.uid, peer.pid)
            raise ProtocolError(ErrorCode.DENIED, f"connections from uid {peer.uid} are not allowed")
        granted = self.access.tokens.capabilities(body.token)
        if granted is None:
            log.warning("hello refused: %s (pid %s) presented an unknown token", peer.principal, peer.pid)
            raise ProtocolError(ErrorCode.DENIED, "the token presented is not valid for this kernel")
        if body.priority > DEFAULT_PRIORITY and Capability.PROC_RENICE not in granted:
            log.warning(
                "hello refused: %s (pid %s) asked for priority %d without proc.renice",
                peer.principal,
                peer.pid,
                body.priority,
            )
            raise ProtocolError(
                ErrorCode.DENIED,
                f"priority {body.priority} is above the default "
                f"{DEFAULT_PRIORITY}: it needs the {Capability.PROC_RENICE.value} "
                "capability (or the operator's `aios renice`)",
            )
        if len(self.agents) >= self.budget.max_agents:
            raise ProtocolError(
                ErrorCode.BUSY,
                f"the kernel holds {len(self.agents)} agents, its limit of "
                f"{self.budget.max_agents} (from its descriptor limit, "
                f"{self.budget.fd_limit}): retry later",
            )
        # the operator (proc.kill) must still get in to clean up after its own user's runaway agents
        if (
            self.agents.count_of(peer.principal) >= self.budget.max_agents_per_principal
            and Capability.PROC_KILL not in granted
        ):
            raise ProtocolError(
                ErrorCode.BUSY,
                f"{peer.principal} holds {self.agents.count_of(peer.principal)} "
                f"agents, the limit per principal "
                f"({self.budget.max_agents_per_principal}): close some, or retry later",
            )
        quota = self.observe.quota_for(peer.principal, body.name, body.tokens_per_minute, body.max_tokens_total)
        agent = self.agents.register(call.item.identity, body, peer, granted, call.item.received, quota)
        self.observe.accounting.agent_started(agent.agent_id, agent.name, agent.principal)
        if granted:
            self.gate.allow(agent, "hello", reason="capabilities " + _names(granted))
        log.info(
            "hello from %s (%s, %s, pid %s, priority %d)",
            agent.agent_id,
            agent.name,
            agent.principal,
            agent.pid,
            agent.priority,
        )
        return HelloResult(agent_id=agent.agent_id, model=self.model_id, scheduler=self.llm.scheduler.name)

    def llm_call(self, call: Call, body) -> None:
        agent = call.agent
        if (
            body.priority > 0
            and agent.priority + body.priority > agent.priority_ceiling
            and Capability.PROC_RENICE not in agent.capabilities
        ):
            self.procs.deny_priority(
                call,
                f"{call.syscall.name} with priority hint +{body.priority}",
                agent.priority + body.priority,
                agent,
            )
        try:
            self.llm.submit(agent, call.item, body, call.now)
        except ProtocolError as error:  # refused before it was queued: still an error the agent's account shows
            self.observe.accounting.failed(agent.agent_id, error.code)
            raise

    def cancel(self, call: Call, body: Cancel) -> Ack:
        req_id = f"{call.agent.agent_id}/{body.request_id}"  # an agent names only its own requests
        if req_id not in self.llm.requests:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no request {body.request_id!r} in flight")
        self.llm.cancel(req_id, ErrorCode.CANCELLED, "cancelled by the agent")
        return Ack()

    def grant(self, call: Call, body: Grant) -> GrantResult:
        try:
            wanted = caps.parse(body.capabilities)
        except ValueError as error:
            raise ProtocolError(ErrorCode.BAD_REQUEST, str(error)) from None
        # access.grant itself is the table's (checked at the door); what may be granted depends on the arguments
        if not all(caps.holds(call.agent.capabilities, c) for c in wanted):
            self.gate.deny(
                call.agent,
                "access.grant",
                "access.grant: the caller cannot grant what it does not hold",
                target=_names(wanted),
                reason="cannot grant what it does not hold",
            )
        self.gate.used(call.agent, "access.grant", Capability.GRANT, target=_names(wanted))
        return GrantResult(token=self.access.tokens.mint(wanted))

    def stats(self, call: Call, body) -> KernelStats:
        return KernelStats(
            values={
                "model": self.model_id,
                "scheduler": self.llm.scheduler.name,
                "steps": call.now,
                "agents": len(self.agents),
                **self.llm.stats(),
            }
        )

    def top(self, call: Call, body: Top) -> KernelTop:  # proc.view: the table's
        return KernelTop(snapshot=top_of(self, call.now, body.limit))

    def metrics(self, call: Call, body) -> KernelMetrics:  # proc.view: the table's
        return KernelMetrics(metrics=metrics_of(self))

    def ping(self, call: Call, body) -> Ack:
        return Ack()


def _names(capabilities) -> str:
    """Capabilities as the audit log names them: sorted, comma-separated ("tool:NAME" strings as they are)."""
    return ",".join(sorted(getattr(c, "value", c) for c in capabilities))
