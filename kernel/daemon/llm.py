"""LLM calls from syscall to final reply: admission checks, the scheduler's plan carried out through the context
manager, one engine step, and the token events routed back to their agents.

The scheduler decides (kernel/scheduler/), the context manager moves KV (kernel/context/), the engine computes
(kernel/engine/); this module only keeps the request table true and talks to agents through the outbox.

Early tool starts: with early_tools set (kernel/services/early_start.py EarlyStarts, from the tool service), a chat
that offers tools, is constrained and did not opt out (Chat.early_tools) is watched as it generates; the tools it calls
that may start early are started as soon as their arguments close, before the sequence ends.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from ipc.errors import ErrorCode, ProtocolError
from ipc.messages import Chat, Completion, Generate, Timing, ToolCall, Usage
from kernel.context.snapshot import SnapshotError
from kernel.daemon.agents import AgentRecord, AgentTable
from kernel.daemon.inbound import Inbound
from kernel.daemon.limits import AgentLimits
from kernel.daemon.requests import LLMRequest, RequestTable
from kernel.engine.core.interface import (
    EngineError,
    EngineRequest,
    FinishReason,
    NoCapacity,
    SamplingParams,
    TokenEvent,
)
from kernel.engine.structured.tool_calls import parse_tool_calls
from kernel.observe.quotas import QuotaRefused
from kernel.observe.state import Observation
from kernel.replies import Outbox
from kernel.scheduler import transitions
from kernel.scheduler.base import ReqState, RequestView, Scheduler

log = logging.getLogger("aiosd.llm")


class LLMService:
    def __init__(
        self,
        engine,
        context,
        scheduler: Scheduler,
        agents: AgentTable,
        outbox: Outbox,
        limits: AgentLimits | None = None,
        observe: Observation | None = None,
    ):
        self.limits = limits or AgentLimits()
        self.observe = observe or Observation()
        self.accounting = self.observe.accounting
        self.engine = engine
        self.context = context
        self.scheduler = scheduler
        self.agents = agents
        self.outbox = outbox
        self.requests = RequestTable()
        self.tokens_generated = 0
        self.program_start: dict[str, int] = {}  # agent -> step of its program's first call (plas ranks by it)
        self.planned: list[str] = []  # the last plan's admissions, in its order (kernel.top's queue order)
        self.early_tools = None  # EarlyStarts of the tool service, when tool calls may start as they are written

    # -- arrivals ------------------------------------------------------------------------------------------------

    def submit(self, agent: AgentRecord, item: Inbound, call: Generate | Chat, now: int) -> None:
        """Queue an LLM call, its prompt already tokenized by the preprocessor; ProtocolError if it is malformed or
        over the agent's limits. The reply comes when it finishes."""
        client_id = item.envelope.req_id
        req_id = f"{agent.agent_id}/{client_id}"
        if req_id in self.requests:
            raise ProtocolError(ErrorCode.DUPLICATE_ID, f"request {client_id!r} is already in flight")
        if item.prompt_ids is None:
            raise ProtocolError(ErrorCode.INTERNAL, "the call reached the loop without its prompt tokens")
        self.limits.check(self.requests.of_agent(agent.agent_id), len(item.prompt_ids))
        params = SamplingParams(
            max_tokens=call.max_tokens,
            temperature=call.temperature,
            top_p=call.top_p,
            top_k=call.top_k,
            seed=call.seed,
            stop=call.stop,
            ignore_eos=call.ignore_eos,
            grammar=item.grammar,
        )
        try:
            params.validate()
        except EngineError as error:
            raise ProtocolError(ErrorCode.BAD_REQUEST, str(error)) from None
        reserved = len(item.prompt_ids) + call.max_tokens
        try:
            agent.quota.admit(reserved)  # last: a call refused for any other reason takes nothing from the quota
        except QuotaRefused as refused:
            raise ProtocolError(refused.code, refused.message, retry_after_s=refused.retry_after_s) from None
        self.requests.add(
            LLMRequest(
                req_id=req_id,
                client_id=client_id,
                agent_id=agent.agent_id,
                identity=item.identity,
                engine_request=EngineRequest(req_id=req_id, prompt_ids=item.prompt_ids, params=params),
                stream=call.stream,
                priority_hint=call.priority,
                predicted_tokens=call.predicted_tokens,
                arrival_step=now,
                waiting_since=now,
                arrival_time=item.received,
                tool_format=item.tool_format,
                reserved=reserved,
            )
        )
        self.program_start.setdefault(agent.agent_id, now)
        if self.early_tools is not None and isinstance(call, Chat) and call.early_tools and item.grammar is not None:
            self.early_tools.watch(req_id, agent, call.tools, item.tool_format)

    # -- one loop iteration --------------------------------------------------------------------------------------

    def busy(self) -> bool:
        """True while the engine has sequences to step."""
        return bool(self.requests.in_state(ReqState.RUNNING)) or self.engine.has_work()

    def schedule(self, now: int) -> None:
        """Take over the sequences the engine preempted on its own, ask the scheduler for a plan and carry it out:
        preemptions first, then admissions in order."""
        for req_id in self.engine.take_preempted():
            # Out of KV blocks for a decode, the engine gave up its youngest sequence's blocks. The request waits like
            # any preempted one (aios ps shows it) and resumes, by recompute, when a plan admits it again.
            request = self._planned(req_id, ReqState.RUNNING)
            if request is not None:
                log.info("engine preempted %s (out of KV blocks); it resumes by recompute", req_id)
                transitions.preempt(request, now)
                self.accounting.preempted(request.agent_id, 0)
        waiting = self.requests.in_state(ReqState.WAITING, ReqState.PREEMPTED)
        if not waiting:
            return
        running = self.requests.in_state(ReqState.RUNNING)
        plan = self.scheduler.plan(
            [self._view(r) for r in running], [self._view(r) for r in waiting], self.engine.capacity(), now
        )
        self.planned = plan.admit
        for req_id in plan.preempt:
            request = self._planned(req_id, ReqState.RUNNING)
            if request is not None:
                written = getattr(self.context, "snapshot_bytes_saved", 0)
                self.context.preempt(req_id)
                transitions.preempt(request, now)
                self.accounting.preempted(request.agent_id, getattr(self.context, "snapshot_bytes_saved", 0) - written)
        for req_id in plan.admit:
            request = self._planned(req_id, ReqState.WAITING, ReqState.PREEMPTED)
            # The plan's later admissions assumed this one was taken: after a refusal, the next plan redoes them.
            if request is not None and not self._start(request):
                break

    def _start(self, request: LLMRequest) -> bool:
        """Admit or resume request. False if the engine has no room for it now: it stays queued where it was. A
        request the engine refuses as invalid fails with engine_error."""
        try:
            if request.state is ReqState.WAITING:
                self.context.admit(request.agent_id, request.resumable())
                self.agents.get(request.agent_id).service_tokens += request.prompt_tokens
                self.accounting.admitted(request.agent_id, request.prompt_tokens)
                request.admitted_time = time.monotonic()
            else:
                self.context.resume(request.resumable())
        except NoCapacity as error:
            log.info("engine has no room for %s yet (%s); it stays queued", request.req_id, error)
            return False
        except (EngineError, SnapshotError) as error:
            self.cancel(request.req_id, ErrorCode.ENGINE, str(error))
            return True
        transitions.start(request)
        return True

    def step(self) -> None:
        """One engine forward over the batch; its token events go to their agents."""
        try:
            events = self.engine.step()
        except Exception:  # an engine bug must not take every agent down with it: fail the batch, keep serving
            log.exception("engine step failed")
            for request in self.requests.in_state(ReqState.RUNNING):
                self.cancel(request.req_id, ErrorCode.INTERNAL, "the engine failed on this batch")
            return
        for event in events:
            self._route(event)

    def _route(self, event: TokenEvent) -> None:
        request = self.requests.get(event.req_id)
        if request is None:  # cancelled while its step was running
            return
        if event.token_id >= 0:
            request.output_ids.append(event.token_id)
            request.slice_tokens += 1
            self.agents.get(request.agent_id).service_tokens += 1
            self.tokens_generated += 1
            if request.first_token_time is None:
                request.first_token_time = time.monotonic()
        if event.finish_reason is FinishReason.ERROR:  # this sequence alone failed (numerics): the rest go on
            self.cancel(request.req_id, ErrorCode.ENGINE, f"generation failed: {event.error}")
            return
        request.text_parts.append(event.text)
        if self.early_tools is not None:
            self.early_tools.feed(request.req_id, event.text)
        if request.stream and (event.text or event.token_id >= 0):
            self.outbox.token(request.identity, request.client_id, event.text, event.token_id)
        if event.finished:
            self._finish(request, event.finish_reason or FinishReason.EOS)

    def _finish(self, request: LLMRequest, finish_reason: FinishReason) -> None:
        self.context.finished(request.agent_id, request.req_id)
        self._forget_watch(request.req_id)
        self.requests.remove(request.req_id)
        agent = self.agents.get(request.agent_id)
        agent.recent_done.append(request.info(agent.priority, ReqState.DONE))
        done = time.monotonic()
        timing = Timing(
            queue_s=(request.admitted_time or done) - request.arrival_time,
            ttft_s=None if request.first_token_time is None else request.first_token_time - request.arrival_time,
            total_s=done - request.arrival_time,
        )
        usage = Usage(prompt_tokens=request.prompt_tokens, completion_tokens=len(request.output_ids))
        self._settle(request, agent)
        self.accounting.finished(request.agent_id, usage.completion_tokens, timing.ttft_s, _per_token(request, done))
        if timing.ttft_s is not None:
            self.observe.rates.ttft(timing.ttft_s)
        text, calls = "".join(request.text_parts), []
        if request.tool_format is not None:
            text, parsed = parse_tool_calls(text, request.tool_format)
            calls = [ToolCall(id=c.id, name=c.name, arguments=c.arguments_json) for c in parsed]
        self.outbox.result(
            request.identity,
            request.client_id,
            Completion(
                text=text,
                finish_reason="tool_calls" if calls else finish_reason,
                usage=usage,
                timing=timing,
                tool_calls=calls,
            ),
        )

    # -- endings other than finishing ----------------------------------------------------------------------------

    def cancel(self, req_id: str, code: ErrorCode, message: str) -> None:
        """End a request early: free its KV wherever it is and send its final (error) reply."""
        request = self.requests.remove(req_id)
        if request is None:
            return
        self._forget_watch(req_id)
        if request.state is not ReqState.WAITING:
            self.context.drop_request(req_id)
        self._settle(request, self.agents.get(request.agent_id))
        self.accounting.failed(request.agent_id, code, len(request.output_ids))
        self.outbox.error(request.identity, request.client_id, code, message)

    def _settle(self, request: LLMRequest, agent: AgentRecord | None) -> None:
        """Charge the agent's quota what the call used (its prompt once admitted, the tokens it generated) and give
        back the rest of what it reserved."""
        if agent is not None:
            used = (request.prompt_tokens if request.admitted_time is not None else 0) + len(request.output_ids)
            agent.quota.settle(request.reserved, used)

    def _forget_watch(self, req_id: str) -> None:
        if self.early_tools is not None:
            self.early_tools.forget(req_id)

    def drop_agent(self, agent_id: str, code: ErrorCode, message: str) -> None:
        for request in self.requests.of_agent(agent_id):
            self.cancel(request.req_id, code, message)
        self.context.drop_agent(agent_id)
        self.program_start.pop(agent_id, None)

    def fail_all(self, code: ErrorCode, message: str) -> None:
        for request in self.requests:
            self.cancel(request.req_id, code, message)

    # -- views -----------------------------------------------------------------------------------------------------

    def _view(self, request: LLMRequest) -> RequestView:
        """The request as the scheduler sees it, with its KV in blocks as the engine counts them (the engine is the one
        owner of that arithmetic: block rounding, shared prefix blocks)."""
        agent = self.agents.get(request.agent_id)
        blocks = (
            self.engine.blocks_held(request.req_id)
            if request.state is ReqState.RUNNING
            else self.engine.blocks_needed(request.resumable())
        )
        return dataclasses.replace(
            request.view(agent.priority, agent.service_tokens),
            kv_blocks=blocks,
            program_arrival=self.program_start.get(request.agent_id),
        )

    def _planned(self, req_id: str, *states: ReqState) -> LLMRequest | None:
        """The request a plan names, if the plan is consistent with the table (a policy bug is logged, not fatal)."""
        request = self.requests.get(req_id)
        if request is None or request.state not in states:
            log.error(
                "scheduler %s planned %s, which is not %s",
                self.scheduler.name,
                req_id,
                "/".join(s.value for s in states),
            )
            return None
        return request

    def stats(self) -> dict:
        capacity = self.engine.capacity()
        counts = {
            state.value: len(self.requests.in_state(state))
            for state in (ReqState.WAITING, ReqState.RUNNING, ReqState.PREEMPTED)
        }
        return {
            "free_slots": capacity.free_slots,
            "total_slots": capacity.total_slots,
            "engine_running": capacity.running,
            "max_batch": capacity.max_batch,
            "max_context": capacity.max_context,
            "requests_waiting": counts["waiting"],
            "requests_running": counts["running"],
            "requests_preempted": counts["preempted"],
            "tokens_generated": self.tokens_generated,
            **(self.early_tools.stats() if self.early_tools is not None else {}),
            **self.context.stats(),
        }


def _per_token(request: LLMRequest, done: float) -> float | None:
    """Mean seconds per generated token after the first (None with fewer than two): one observation per call."""
    if request.first_token_time is None or len(request.output_ids) < 2:
        return None
    return (done - request.first_token_time) / (len(request.output_ids) - 1)
