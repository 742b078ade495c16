"""The kernel loop: one thread that owns the engine. Each iteration: take the syscalls and connection events that
arrived, reap agents that died, let the scheduler plan, step the engine once. It sleeps on the inbox only when the
engine is idle. A failure in one phase is logged and costs the calls it concerns, never the loop."""

from __future__ import annotations

import logging
import queue
import time

from ipc.errors import ErrorCode
from ipc.messages import NOTIFICATIONS
from kernel.access.audit import AuditLog
from kernel.access.tokens import TokenRegistry
from kernel.daemon.agents import AgentTable
from kernel.daemon.dispatch import AccessPolicy, Syscalls
from kernel.daemon.inbound import ConnectionClosed, ConnectionStalled, Inbound, Inbox
from kernel.daemon.limits import AgentLimits
from kernel.daemon.llm import LLMService
from kernel.observe.state import Observation
from kernel.replies import Outbox
from kernel.scheduler.base import ReqState, Scheduler
from kernel.services.syscalls import ServiceSyscalls

log = logging.getLogger("aiosd.loop")

SYSCALL_BUDGET_S = 0.002  # syscall handling per engine step while the engine has work (~15% of a 15 ms step)


class KernelLoop:
    def __init__(
        self,
        engine,
        context,
        scheduler: Scheduler,
        inbox: Inbox,
        outbox: Outbox,
        access: AccessPolicy | None = None,
        lease_s: float = 30.0,
        idle_wait_s: float = 0.25,
        limits: AgentLimits | None = None,
        services: ServiceSyscalls | None = None,
        observe: Observation | None = None,
    ):
        self.agents = AgentTable()
        self.observe = observe or Observation()
        self.llm = LLMService(engine, context, scheduler, self.agents, outbox, limits, self.observe)
        if services is not None:
            services.attach(self.observe)
            # the tool service's early starts (None when off or without tools) watch the LLM calls' output
            self.llm.early_tools = getattr(services.tools, "early", None)
        self.access = access or AccessPolicy(tokens=TokenRegistry(None), audit=AuditLog(None), allowed_uids=frozenset())
        self.syscalls = Syscalls(self.agents, self.llm, outbox, engine.layout().model_id, self.access, services)
        self.step = 0  # engine steps so far: the scheduler's clock
        self._inbox = inbox
        self._outbox = outbox
        self._lease_s = lease_s
        self._idle_wait_s = idle_wait_s  # how often an idle kernel still checks for dead agents

    def run(self) -> None:
        """Serve until stop(); then every request still in flight gets a shutdown error."""
        while self._take_syscalls(block=not self.llm.busy()):
            self._reap_dead_agents()
            self.observe.rates.sample(self.llm.tokens_generated)
            self.observe.tools.drain(self.observe.accounting)
            if self.syscalls.services is not None:
                self.syscalls.services.tick()
            try:
                self.llm.schedule(self.step)
            except Exception:  # a policy or context-manager bug: the calls it was placing fail, the loop lives
                log.exception("scheduling failed")
                for request in self.llm.requests.in_state(ReqState.WAITING, ReqState.PREEMPTED):
                    self.llm.cancel(request.req_id, ErrorCode.INTERNAL, "the kernel failed to schedule this call")
            if self.llm.busy():
                self.llm.step()
                self.step += 1
        self.llm.fail_all(ErrorCode.SHUTDOWN, "the kernel is shutting down")
        self._refuse_remaining()
        self.agents.close()

    def stop(self) -> None:
        """Callable from a signal handler."""
        self._inbox.put_stop()

    def _take_syscalls(self, block: bool) -> bool:
        """Handle the queued items, False once stop() was called. While the engine has work, only for
        SYSCALL_BUDGET_S per iteration: the rest waits for the next one, so a flood of calls (each answered on this
        thread, if only with `busy`) delays every agent's decode step by at most that much."""
        try:
            item = self._inbox.get(timeout=self._idle_wait_s if block else 0)
        except queue.Empty:
            return True
        deadline = None if block else time.monotonic() + SYSCALL_BUDGET_S
        while item is not None:
            self._handle(item)
            if deadline is not None and time.monotonic() >= deadline:
                return True
            try:
                item = self._inbox.get(timeout=0)
            except queue.Empty:
                return True
        return False

    def _handle(self, item) -> None:
        if isinstance(item, Inbound):
            self.syscalls.handle(item, self.step)
            return
        agent = self.agents.by_identity(item.identity)
        if isinstance(item, ConnectionClosed):
            self.agents.forget_connection(item.identity)
            if agent is not None:
                log.info("agent %s (%s) closed its connection", agent.agent_id, agent.name)
                self.syscalls.end_agent(agent.agent_id, "the agent's connection closed", killed=False)
        elif isinstance(item, ConnectionStalled) and agent is not None:
            log.warning("agent %s (%s) stopped reading its replies: cancelling its calls", agent.agent_id, agent.name)
            for request in self.llm.requests.of_agent(agent.agent_id):
                self.llm.cancel(request.req_id, ErrorCode.CANCELLED, "the agent stopped reading its replies")

    def _reap_dead_agents(self) -> None:
        for agent in self.agents.dead(time.monotonic(), self._lease_s):
            log.info("agent %s (%s, pid %s) is gone: aborting its requests", agent.agent_id, agent.name, agent.pid)
            self.syscalls.end_agent(agent.agent_id, "the agent's process exited", killed=False)

    def _refuse_remaining(self) -> None:
        while True:
            try:
                item = self._inbox.get(timeout=0)
            except queue.Empty:
                return
            if isinstance(item, Inbound) and item.envelope.type not in NOTIFICATIONS:
                self._outbox.error(
                    item.identity, item.envelope.req_id, ErrorCode.SHUTDOWN, "the kernel is shutting down"
                )
