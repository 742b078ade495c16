"""The kernel's LLM service (kernel/daemon/llm.py) driven step by step without sockets or threads: the kernel loop's
schedule-then-step order, requests put straight into its table, replies and every state each request passed through
recorded. Deterministic, for tests of what the scheduler's plans do to a real or fake engine."""

from __future__ import annotations

import os
import types

from kernel.context.manager import ContextManager
from kernel.daemon.llm import LLMService
from kernel.daemon.requests import LLMRequest
from kernel.engine.core.interface import EngineRequest, SamplingParams
from kernel.observe.quotas import Quota
from kernel.scheduler.base import ReqState
from kernel.scheduler.registry import make_scheduler


class Replies:
    """Stands in for the outbox: the final reply of each call, by client id."""

    def __init__(self):
        self.results: dict = {}
        self.errors: dict = {}

    def result(self, identity, client_id, body) -> None:
        self.results[client_id] = body

    def error(self, identity, client_id, code, message) -> None:
        self.errors[client_id] = (code, message)

    def token(self, *args) -> None:
        pass


class DrivenService:
    def __init__(self, engine, scheduler: str = "fifo", preempt_mode: str = "recompute", **options):
        self.engine = engine
        self.replies = Replies()
        self.agent = types.SimpleNamespace(
            agent_id="a1", priority=0, service_tokens=0, recent_done=[], quota=Quota(None, None)
        )
        agents = types.SimpleNamespace(get=lambda agent_id: self.agent)
        self.context = ContextManager(
            engine,
            arena_bytes=1 << 22,
            preempt_mode=preempt_mode,
            retention=False,
            kernel_id=f"{os.getpid()}.sched{id(self)}",
        )
        self.llm = LLMService(engine, self.context, make_scheduler(scheduler, **options), agents, self.replies)
        self.now = 0
        self.states: dict[str, list[ReqState]] = {}  # each request's state after every schedule()

    def add(self, client_id: str, prompt_ids: list[int], params: SamplingParams) -> None:
        req_id = f"a1/{client_id}"
        self.llm.requests.add(
            LLMRequest(
                req_id=req_id,
                client_id=client_id,
                agent_id="a1",
                identity=b"a1",
                engine_request=EngineRequest(req_id=req_id, prompt_ids=list(prompt_ids), params=params),
                stream=False,
                priority_hint=0,
                predicted_tokens=None,
                arrival_step=self.now,
                waiting_since=self.now,
                arrival_time=0.0,
            )
        )
        self.states[client_id] = []

    def iteration(self) -> None:
        """One kernel loop iteration: plan and carry it out, then one engine step."""
        self.llm.schedule(self.now)
        for request in self.llm.requests:
            self.states[request.client_id].append(request.state)
        if self.llm.busy():
            self.llm.step()
        self.now += 1

    def run_until_answered(self, limit: int = 2000) -> None:
        while len(self.replies.results) + len(self.replies.errors) < len(self.states):
            assert self.now < limit, "calls still unanswered"
            self.iteration()

    def text(self, client_id: str) -> str:
        return self.replies.results[client_id].text

    def close(self) -> None:
        self.context.close()
