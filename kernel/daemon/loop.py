"""The kernel loop: one thread that owns the engine. Each iteration: take the syscalls that arrived, reap agents
that died, let the scheduler plan, step the engine once. It sleeps on the inbox only when the engine is idle."""
from __future__ import annotations

import logging
import queue
import time

from ipc.errors import ErrorCode
from ipc.messages import NOTIFICATIONS
from kernel.daemon.agents import AgentTable
from kernel.daemon.dispatch import Syscalls, end_agent
from kernel.daemon.llm import LLMService
from kernel.daemon.outbox import Outbox
from kernel.scheduler.base import Scheduler

log = logging.getLogger("aiosd.loop")


class KernelLoop:
    def __init__(self, engine, context, scheduler: Scheduler, inbox: queue.SimpleQueue, outbox: Outbox,
                 lease_s: float = 30.0, idle_wait_s: float = 0.25):
        self.agents = AgentTable()
        self.llm = LLMService(engine, context, scheduler, self.agents, outbox)
        self.syscalls = Syscalls(self.agents, self.llm, outbox, engine.layout().model_id)
        self.step = 0                        # engine steps so far: the scheduler's clock
        self._inbox = inbox
        self._outbox = outbox
        self._lease_s = lease_s
        self._idle_wait_s = idle_wait_s      # how often an idle kernel still checks for dead agents

    def run(self) -> None:
        """Serve until stop(); then every request still in flight gets a shutdown error."""
        while self._take_syscalls(block=not self.llm.busy()):
            self._reap_dead_agents()
            self.llm.schedule(self.step)
            if self.llm.busy():
                self.llm.step()
                self.step += 1
        self.llm.fail_all(ErrorCode.SHUTDOWN, "the kernel is shutting down")
        self._refuse_remaining()
        self.agents.close()

    def stop(self) -> None:
        """Callable from a signal handler: SimpleQueue.put is reentrant."""
        self._inbox.put(None)

    def _take_syscalls(self, block: bool) -> bool:
        """Dispatch every queued syscall; False once stop() was called."""
        try:
            item = self._inbox.get(timeout=self._idle_wait_s) if block else self._inbox.get_nowait()
        except queue.Empty:
            return True
        while item is not None:
            self.syscalls.handle(item, self.step)
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return True
        return False

    def _reap_dead_agents(self) -> None:
        for agent in self.agents.dead(time.monotonic(), self._lease_s):
            log.info("agent %s (%s, pid %s) is gone: aborting its requests", agent.agent_id, agent.name, agent.pid)
            end_agent(self.agents, self.llm, agent.agent_id, "the agent's process exited", killed=False)

    def _refuse_remaining(self) -> None:
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if item is not None and item.envelope.type not in NOTIFICATIONS:
                self._outbox.error(item.identity, item.envelope.req_id, ErrorCode.SHUTDOWN, "the kernel is shutting down")
