"""The dispatch table: one handler per syscall type, run on the kernel loop's thread.

Managers answer at once (the handler returns the result body); LLM calls return None and are answered by the LLM
service when they finish. Every syscall gets exactly one final reply: a result, or an error carrying a code.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from ipc.errors import ErrorCode, ProtocolError
from ipc.messages import (NOTIFICATIONS, Ack, AgentInfo, Cancel, Hello, HelloResult, KernelStats, ProcKill, ProcList,
                          ProcTable, SetPriority)
from kernel.daemon.agents import AgentRecord, AgentTable
from kernel.daemon.io_thread import Inbound
from kernel.daemon.llm import LLMService
from kernel.daemon.outbox import Outbox

log = logging.getLogger("aiosd.dispatch")

OPEN_SYSCALLS = ("hello", "kernel.ping")      # allowed before hello


@dataclass(frozen=True)
class Call:
    """One syscall in the loop: who sent it (agent is None before hello) and the kernel step it arrived at."""
    item: Inbound
    agent: AgentRecord | None
    now: int


def end_agent(agents: AgentTable, llm: LLMService, agent_id: str, message: str, killed: bool) -> None:
    """Abort an agent's requests (error replies), free its KV, forget it."""
    llm.drop_agent(agent_id, ErrorCode.KILLED, message)
    agents.remove(agent_id, killed=killed)


class Syscalls:
    def __init__(self, agents: AgentTable, llm: LLMService, outbox: Outbox, model_id: str):
        self.agents = agents
        self.llm = llm
        self.outbox = outbox
        self.model_id = model_id
        self.table: dict[str, Callable[[Call, Any], Any]] = {
            "hello": self.hello, "llm.generate": self.llm_call, "llm.chat": self.llm_call, "llm.cancel": self.cancel,
            "proc.list": self.proc_list, "proc.kill": self.proc_kill, "proc.set_priority": self.set_priority,
            "kernel.stats": self.stats, "kernel.ping": self.ping,
        }

    def handle(self, item: Inbound, now: int) -> None:
        envelope, identity = item.envelope, item.identity
        agent = self.agents.by_identity(identity)
        if agent is not None:
            agent.last_seen = item.received
        if envelope.type in NOTIFICATIONS:      # heartbeat: renewing the lease above was all it asked
            return
        try:
            if agent is None and envelope.type not in OPEN_SYSCALLS:
                if self.agents.was_killed(identity):
                    raise ProtocolError(ErrorCode.KILLED, "this agent was killed")
                raise ProtocolError(ErrorCode.HELLO_REQUIRED, "say hello first")
            result = self.table[envelope.type](Call(item, agent, now), envelope.body)
        except ProtocolError as error:
            self.outbox.error(identity, envelope.req_id, error.code, error.message)
            return
        except Exception:       # a kernel bug answers this syscall with an error; the kernel keeps serving
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
        agent = self.agents.register(call.item.identity, body, call.item.received)
        log.info("hello from %s (%s, pid %s, priority %d)", agent.agent_id, agent.name, agent.pid, agent.priority)
        return HelloResult(agent_id=agent.agent_id, model=self.model_id, scheduler=self.llm.scheduler.name)

    def llm_call(self, call: Call, body) -> None:
        self.llm.submit(call.agent, call.item.identity, call.item.envelope.req_id, body, call.now, call.item.received)

    def cancel(self, call: Call, body: Cancel) -> Ack:
        req_id = f"{call.agent.agent_id}/{body.request_id}"
        if req_id not in self.llm.requests:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no request {body.request_id!r} in flight")
        self.llm.cancel(req_id, ErrorCode.CANCELLED, "cancelled by the agent")
        return Ack()

    def proc_list(self, call: Call, body: ProcList) -> ProcTable:
        return ProcTable(agents=[
            AgentInfo(agent_id=a.agent_id, name=a.name, pid=a.pid, priority=a.priority,
                      service_tokens=a.service_tokens,
                      requests=list(a.recent_done) + [r.info(a.priority) for r in self.llm.requests.of_agent(a.agent_id)])
            for a in self.agents])

    def proc_kill(self, call: Call, body: ProcKill) -> Ack:
        self._target(body.agent_id)
        end_agent(self.agents, self.llm, body.agent_id, f"killed by agent {call.agent.agent_id}", killed=True)
        log.info("agent %s killed by %s", body.agent_id, call.agent.agent_id)
        return Ack()

    def set_priority(self, call: Call, body: SetPriority) -> Ack:
        self._target(body.agent_id).priority = body.priority
        return Ack()

    def stats(self, call: Call, body) -> KernelStats:
        return KernelStats(values={"model": self.model_id, "scheduler": self.llm.scheduler.name, "steps": call.now,
                                   "agents": len(self.agents), **self.llm.stats()})

    def ping(self, call: Call, body) -> Ack:
        return Ack()

    def _target(self, agent_id: str) -> AgentRecord:
        agent = self.agents.get(agent_id)
        if agent is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no agent {agent_id!r}")
        return agent
