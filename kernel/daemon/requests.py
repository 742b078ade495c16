"""The request table: every LLM call the kernel holds, from arrival to its final reply.

The table is the source of truth for what the scheduler sees (RequestView) and for what a resumed request carries
(the tokens generated so far). Time for the scheduler is counted in kernel steps; wall-clock times are kept only to
report queue wait, time to first token and total latency back to the agent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ipc.messages import PRIORITY_MAX, PRIORITY_MIN, RequestInfo
from kernel.engine.core.interface import EngineRequest

if TYPE_CHECKING:
    from kernel.engine.structured.tool_formats import ToolFormat
from kernel.scheduler.base import ReqState, RequestView


@dataclass
class LLMRequest:
    req_id: str  # kernel-wide id: "<agent id>/<client id>"
    client_id: int | str  # the id the agent chose, echoed in every reply frame
    agent_id: str
    identity: bytes  # where replies go
    engine_request: EngineRequest  # as first submitted (prompt, sampling); output_ids below
    stream: bool
    priority_hint: int
    predicted_tokens: int | None
    arrival_step: int
    arrival_time: float
    state: ReqState = ReqState.WAITING
    waiting_since: int = 0
    slice_tokens: int = 0  # tokens generated since the last admit/resume
    output_ids: list[int] = field(default_factory=list)
    text_parts: list[str] = field(default_factory=list)
    admitted_time: float | None = None
    first_token_time: float | None = None
    tool_format: ToolFormat | None = None  # a chat that offered tools: its text is parsed into calls at the end
    reserved: int = 0  # tokens held in the agent's quota until it ends (prompt + max_tokens)

    @property
    def prompt_tokens(self) -> int:
        return len(self.engine_request.prompt_ids)

    def resumable(self) -> EngineRequest:
        """The request to hand back to the engine after a preemption: same prompt, the output so far."""
        return dataclasses.replace(self.engine_request, output_ids=list(self.output_ids), rng_state=None)

    def priority(self, agent_priority: int) -> int:
        """The agent's priority plus this call's hint, clamped to the protocol's range."""
        return max(PRIORITY_MIN, min(PRIORITY_MAX, agent_priority + self.priority_hint))

    def view(self, agent_priority: int, agent_service: int) -> RequestView:
        return RequestView(
            req_id=self.req_id,
            agent_id=self.agent_id,
            state=self.state,
            priority=self.priority(agent_priority),
            arrival=self.arrival_step,
            prompt_tokens=self.prompt_tokens,
            max_tokens=self.engine_request.params.max_tokens,
            output_tokens=len(self.output_ids),
            slice_tokens=self.slice_tokens,
            waiting_since=self.waiting_since,
            agent_service=agent_service,
            predicted_tokens=self.predicted_tokens,
        )

    def info(self, agent_priority: int, state: ReqState | None = None) -> RequestInfo:
        return RequestInfo(
            request_id=self.client_id,
            state=(state or self.state).value,
            priority=self.priority(agent_priority),
            prompt_tokens=self.prompt_tokens,
            output_tokens=len(self.output_ids),
        )


class RequestTable:
    def __init__(self):
        self._requests: dict[str, LLMRequest] = {}  # insertion order = arrival order

    def add(self, request: LLMRequest) -> None:
        self._requests[request.req_id] = request

    def get(self, req_id: str) -> LLMRequest | None:
        return self._requests.get(req_id)

    def remove(self, req_id: str) -> LLMRequest | None:
        return self._requests.pop(req_id, None)

    def of_agent(self, agent_id: str) -> list[LLMRequest]:
        return [r for r in self._requests.values() if r.agent_id == agent_id]

    def in_state(self, *states: ReqState) -> list[LLMRequest]:
        return [r for r in self._requests.values() if r.state in states]

    def __iter__(self):
        return iter(list(self._requests.values()))

    def __len__(self) -> int:
        return len(self._requests)

    def __contains__(self, req_id: str) -> bool:
        return req_id in self._requests
