"""proc.list, proc.kill, proc.set_priority: the kernel's agents as agents see them, and who may act on whom.

An agent sees and acts on the agents it owns (owns(): itself, another connection of its process, an agent in a process
it started, all under its principal); anyone else's needs a capability — proc.view to see every agent, proc.kill,
proc.renice — which the handler decides, since the target is an argument (so not in the syscall table), through the
gate (kernel/access/gate.py): a use of the capability and a denial are audited. An agent the caller cannot see is
denied, not reported missing, unless it holds the capability.

Priority (see dispatch.py): without proc.renice an agent may raise an agent it owns only up to that agent's ceiling,
its calls' priority hints included; deny_priority() is the one refusal, shared with the LLM calls' hint check.
Runs on the kernel loop's thread; the agent table and requests are the loop's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ipc.errors import ErrorCode, ProtocolError
from ipc.messages import Ack, AgentInfo, ProcKill, ProcList, ProcTable, SetPriority
from kernel.access import capabilities as caps
from kernel.access.capabilities import Capability
from kernel.access.gate import Gate
from kernel.daemon.agents import AgentRecord, AgentTable

if TYPE_CHECKING:
    from kernel.daemon.dispatch import Call
    from kernel.daemon.llm import LLMService

log = logging.getLogger("aiosd.dispatch")


class ProcSyscalls:
    def __init__(self, agents: AgentTable, llm: LLMService, gate: Gate, end_agent: Callable[[str, str, bool], None]):
        self.agents, self.llm, self.gate = agents, llm, gate
        self._end_agent = end_agent  # the dispatcher's: aborts the agent's calls, frees its KV and its services' state

    def handlers(self) -> dict:
        return {"proc.list": self.proc_list, "proc.kill": self.proc_kill, "proc.set_priority": self.set_priority}

    def proc_list(self, call: Call, body: ProcList) -> ProcTable:
        everyone = Capability.PROC_VIEW in call.agent.capabilities
        return ProcTable(
            agents=[
                AgentInfo(
                    agent_id=a.agent_id,
                    name=a.name,
                    pid=a.pid,
                    priority=a.priority,
                    service_tokens=a.service_tokens,
                    requests=list(a.recent_done) + [r.info(a.priority) for r in self.llm.requests.of_agent(a.agent_id)],
                )
                for a in self.agents
                if everyone or owns(call.agent, a)
            ]
        )

    def proc_kill(self, call: Call, body: ProcKill) -> Ack:
        self._authorize(call, Capability.PROC_KILL, body.agent_id)
        self._end_agent(body.agent_id, f"killed by agent {call.agent.agent_id}", True)
        log.info("agent %s killed by %s", body.agent_id, call.agent.agent_id)
        return Ack()

    def set_priority(self, call: Call, body: SetPriority) -> Ack:
        target = self._authorize(call, Capability.PROC_RENICE, body.agent_id)
        if Capability.PROC_RENICE in call.agent.capabilities:
            target.priority_ceiling = body.priority  # as the operator set it: lowered, it stays lowered
        elif body.priority > target.priority:
            # its calls in flight run at its priority plus their hints: the highest of them must stay in bounds too
            hints = [r.priority_hint for r in self.llm.requests.of_agent(target.agent_id)]
            highest = body.priority + max([0, *hints])
            if highest > target.priority_ceiling:
                self.deny_priority(
                    call, f"proc.set_priority {body.priority} on agent {target.agent_id}", highest, target
                )
        target.priority = body.priority
        return Ack()

    def deny_priority(self, call: Call, what: str, wanted: int, target: AgentRecord) -> None:
        reason = f"priority {wanted} is above {target.agent_id}'s ceiling {target.priority_ceiling}"
        self.gate.deny(
            call.agent,
            call.syscall.name,
            f"{what}: {reason}; raising it needs the {Capability.PROC_RENICE.value} capability (or the operator's "
            "`aios renice`)",
            target=target.agent_id,
            reason=reason,
        )

    def _authorize(self, call: Call, capability: Capability, agent_id: str) -> AgentRecord:
        """The target agent if the caller owns it or holds the capability; permission_denied (audited) otherwise.
        An agent the caller cannot see is denied, not reported missing, unless it holds the capability."""
        target = self.agents.get(agent_id)
        if target is not None and owns(call.agent, target):
            return target
        syscall = call.syscall.name
        self.gate.require(
            call.agent,
            syscall,
            capability,
            target=agent_id,
            message=f"{syscall} on agent {agent_id!r} needs the {capability.value} capability (or owning the agent)",
        )
        if target is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no agent {agent_id!r}")
        self.gate.used(call.agent, syscall, capability, target=agent_id)
        return target


def owns(caller: AgentRecord, target: AgentRecord) -> bool:
    """The caller itself, another connection of its process, or an agent in a process it started."""
    if caller.agent_id == target.agent_id:
        return True
    if caller.principal != target.principal or caller.pid is None or target.pid is None:
        return False
    return caps.is_same_or_descendant(target.pid, caller.pid)
