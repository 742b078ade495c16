"""The kernel loop's side of a context switch, reduced to what the context manager tests need: admit, step the real
engine, collect each request's tokens, report finished requests, and preempt/resume on demand."""

from __future__ import annotations

from kernel.context.manager import ContextManager
from kernel.engine.core.interface import Engine, EngineRequest, SamplingParams


class MiniLoop:
    def __init__(self, engine: Engine, context: ContextManager):
        self.engine, self.context = engine, context
        self.requests: dict[str, tuple[str, list[int], SamplingParams]] = {}  # req id -> agent, prompt, params
        self.outputs: dict[str, list[int]] = {}
        self.done: set[str] = set()

    def admit(self, agent_id: str, req_id: str, prompt_ids: list[int], params: SamplingParams) -> int:
        self.requests[req_id] = (agent_id, list(prompt_ids), params)
        self.outputs[req_id] = []
        return self.context.admit(agent_id, EngineRequest(req_id, list(prompt_ids), params))

    def preempt(self, req_id: str) -> str:
        return self.context.preempt(req_id)

    def resume(self, req_id: str) -> str:
        _, prompt_ids, params = self.requests[req_id]
        return self.context.resume(EngineRequest(req_id, list(prompt_ids), params, list(self.outputs[req_id])))

    def step(self) -> None:
        for event in self.engine.step():
            if event.token_id >= 0:
                self.outputs[event.req_id].append(event.token_id)
            if event.finished:
                self.context.finished(self.requests[event.req_id][0], event.req_id)
                self.done.add(event.req_id)

    def run_until_done(self, *req_ids: str, limit: int = 500) -> None:
        for _ in range(limit):
            if set(req_ids) <= self.done:
                return
            self.step()
        raise AssertionError(f"{set(req_ids) - self.done} did not finish in {limit} steps")

    def generate(self, agent_id: str, req_id: str, prompt_ids: list[int], params: SamplingParams) -> list[int]:
        self.admit(agent_id, req_id, prompt_ids, params)
        self.run_until_done(req_id)
        return self.outputs[req_id]
