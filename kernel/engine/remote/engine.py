"""RemoteEngine: the engine interface over a pool of OpenAI-compatible servers (vLLM, SGLang, llama.cpp's server).

Work. add() routes a call to a replica (router.py) and starts a streamed /v1/completions attempt on a thread of its
own (call.py); step() waits at most STEP_WAIT_S for reports and turns what arrived into TokenEvents. The kernel thread
never blocks on HTTP. Sampling, stop strings and end-of-sequence happen on the server.

Capacity. Each replica takes at most `slots` calls at once (its own decode slots when it says, else max_batch), and
the engine reports exactly that as its capacity: one block per call, block_size = the context length, max_batch = the
healthy replicas' slots. So a call beyond the bound waits in the kernel, where the scheduler orders it by priority,
instead of in a server's FIFO queue. When no replica is healthy the engine reports room anyway, so add() is reached
and fails the call at once with a clear engine error instead of leaving it queued without end.

Context switch by text, not by KV. A server's KV cache cannot be saved or loaded from here: layout().snapshots is
False, kv_nbytes() is 0, save_kv/load_kv refuse, and the kernel preempts this engine by recompute: abort() cancels
the stream (the server frees the sequence), and resuming add()s the request with the tokens generated so far, which
are resubmitted as the prompt's continuation (prompt + output so far, max_tokens less what was generated). The prefix
the server cached for the first attempt usually makes that prefill cheap. A seeded sampled call resumes with a fresh
seed stream, so its output after the switch differs from an uninterrupted run's; a greedy call's does not, up to the
server's numerics (a prefill and a decode of the same token may round differently).

Failover. A replica found dead (a call's connection refused or cut, 502/503/504, or the health prober's verdict) has
each call it held resumed on another healthy replica the same way, over that replica's bound if need be (the calls
were admitted already); with none left, or after len(replicas) + 1 resumptions, the call fails (FinishReason.ERROR).

Not supported: constrained decoding (SamplingParams.grammar: tool calls, JSON schemas) — add() refuses it.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Sequence
from dataclasses import dataclass

from kernel.engine.core.interface import (
    Capacity,
    EngineError,
    EngineRequest,
    FinishReason,
    KVLayout,
    KVMeta,
    NoCapacity,
    TokenEvent,
    check_context_length,
)
from kernel.engine.loading.tokenizer import TextTokenizer
from kernel.engine.remote.call import Attempt, Ended, Failed, Streamed
from kernel.engine.remote.chunks import request_body
from kernel.engine.remote.health import HealthChange, HealthProber
from kernel.engine.remote.http import HTTPFailure
from kernel.engine.remote.replica import Replica, ServerInfo, describe, endpoints_of
from kernel.engine.remote.router import Router
from kernel.engine.remote.tokenizer import check_against, load_tokenizer

log = logging.getLogger("aiosd.remote")

STEP_WAIT_S = 0.005  # step() waits this long for a report: a busy kernel loop sleeps here instead of spinning
DEFAULT_CONTEXT = 2048  # a server that does not say its context length
READ_TIMEOUT_S = 300.0  # one read of a stream (a long prompt's prefill on a slow server); hung servers: health.py


@dataclass
class _Call:
    req: EngineRequest
    output_ids: list[int]  # every token so far, those the request came with included
    attempt: Attempt | None = None
    resumes: int = 0


class RemoteEngine:
    def __init__(
        self,
        urls: Sequence[str],
        model: str | None = None,
        max_batch: int = 32,
        health_interval_s: float = 1.0,
        health_timeout_s: float = 2.0,
        tokenizer: TextTokenizer | None = None,
    ):
        """tokenizer: one already loaded for the served model (tests and benches share one: reading a GGUF's
        vocabulary takes seconds); None → load_tokenizer(model, served model)."""
        endpoints = endpoints_of(urls)
        infos: dict[str, ServerInfo] = {}
        for url, endpoint in endpoints.items():
            try:
                infos[url] = describe(endpoint)
            except HTTPFailure as error:
                log.warning("replica %s is not answering (%s): it joins when its health check passes", url, error)
        if not infos:
            raise EngineError(f"no replica answered: {', '.join(urls)}")
        first = next(iter(infos.values()))
        if any(info.model != first.model for info in infos.values()):
            raise EngineError(f"the replicas serve different models: {sorted({i.model for i in infos.values()})}")
        self._model = first.model
        self._max_batch = max_batch
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model, first.model)[0]
        check_against(self.tokenizer, endpoints[next(iter(infos))])
        self._max_context = min((i.max_context for i in infos.values() if i.max_context), default=DEFAULT_CONTEXT)
        self._replicas = [
            Replica(url, endpoints[url], self._slots(infos.get(url)), healthy=url in infos) for url in urls
        ]
        self._by_name = {r.name: r for r in self._replicas}
        self._router = Router(self._replicas)
        self._reports: queue.SimpleQueue = queue.SimpleQueue()
        self._calls: dict[str, _Call] = {}
        self._ready: list[TokenEvent] = []  # events made on the kernel thread, returned by the next step()
        self._layout = KVLayout(
            model_id=f"remote:{self._model}", n_layers=0, n_kv_heads=0, head_dim=0, dtype="float32", snapshots=False
        )
        self.failovers = 0
        self._prober = HealthProber(
            endpoints, {r.name: r.healthy for r in self._replicas}, self._reports, health_interval_s, health_timeout_s
        )
        self._prober.start()

    # -- description -------------------------------------------------------------------------------------------------

    def layout(self) -> KVLayout:
        return self._layout

    def capacity(self) -> Capacity:
        healthy = [r for r in self._replicas if r.healthy]
        if healthy:
            total = sum(r.slots for r in healthy)
            free = sum(r.free for r in healthy)
        else:
            total = free = sum(r.slots for r in self._replicas)
        return Capacity(
            free_blocks=free,
            total_blocks=total,
            block_size=self._max_context,
            running=len(self._calls),
            max_batch=total,
            max_context=self._max_context,
        )

    def replicas(self) -> list[Replica]:
        return list(self._replicas)

    def replica_of(self, req_id: str) -> str | None:  # where a call streams now (None: it does not)
        call = self._calls.get(req_id)
        return call.attempt.replica.name if call is not None and call.attempt is not None else None

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode_prompt(text)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    def apply_chat_template(self, messages: list[dict]) -> list[int]:
        return self.tokenizer.apply_chat_template(messages)

    def eos_token_ids(self) -> tuple[int, ...]:
        return tuple(self.tokenizer.eos_ids)

    def blocks_needed(self, req: EngineRequest) -> int:
        return 1

    def blocks_held(self, req_id: str) -> int:
        return 1 if req_id in self._calls else 0

    # -- calls -------------------------------------------------------------------------------------------------------

    def add(self, req: EngineRequest) -> None:
        req.params.validate()
        if req.params.grammar is not None:
            raise EngineError("constrained decoding (tools, grammars) is not available with the remote engine")
        if req.req_id in self._calls:
            raise EngineError(f"request {req.req_id!r} is already running")
        if not req.prompt_ids:
            raise EngineError("the prompt is empty")
        check_context_length(len(req.prompt_ids), req.params.max_tokens, self._max_context)
        if not any(r.healthy for r in self._replicas):
            raise EngineError(f"no healthy replica: {', '.join(r.name for r in self._replicas)} are all down")
        call = _Call(req, list(req.output_ids))
        if not self._launch(call, [r for r in self._replicas if r.free > 0]):
            raise NoCapacity("every healthy replica has its calls in flight")
        self._calls[req.req_id] = call

    def step(self) -> list[TokenEvent]:
        events, self._ready = self._ready, []
        try:
            report = self._reports.get(timeout=STEP_WAIT_S if not events and self._calls else 0)
        except queue.Empty:
            return events
        while True:
            self._handle(report, events)
            try:
                report = self._reports.get_nowait()
            except queue.Empty:
                break
        return events + self._ready if self._ready else events

    def take_preempted(self) -> list[str]:
        return []  # the engine never gives a call up on its own: a dead replica's calls fail over

    def has_work(self) -> bool:
        # pending reports count: an idle kernel loop then still steps (within its idle wait) to take a health change
        return bool(self._calls or self._ready) or not self._reports.empty()

    def abort(self, req_id: str) -> None:
        call = self._calls.pop(req_id, None)
        if call is not None:
            self._detach(call)

    def kv_nbytes(self, req_id: str) -> int:
        return 0  # nothing to snapshot: the context manager's save path stops here

    def save_kv(self, req_id: str, dst: memoryview) -> KVMeta:
        raise EngineError("the remote engine keeps no KV here to save: preempt it by recompute")

    def load_kv(self, req: EngineRequest, meta: KVMeta, src: memoryview) -> None:
        raise EngineError("the remote engine cannot load KV: resume it by recompute")

    def close(self) -> None:
        """Stop the prober and cut every stream (aiosd's exit, tests)."""
        self._prober.stop()
        for call in list(self._calls.values()):
            self._detach(call)
        self._calls.clear()

    # -- mechanism ---------------------------------------------------------------------------------------------------

    def _slots(self, info: ServerInfo | None) -> int:
        return min(self._max_batch, info.slots) if info is not None and info.slots else self._max_batch

    def _launch(self, call: _Call, candidates: list[Replica]) -> bool:
        """Start an attempt for call on the router's pick among candidates; False if there is none."""
        tokens = call.req.prompt_ids + call.output_ids
        choice = self._router.choose(tokens, candidates)
        if choice is None:
            return False
        replica, _ = choice
        remaining = call.req.params.max_tokens - len(call.output_ids)
        if remaining <= 0:  # everything was generated before the switch; only the finish was missing
            self._ready.append(TokenEvent(call.req.req_id, -1, "", finished=True, finish_reason=FinishReason.LENGTH))
            call.attempt = None
            return True
        call.attempt = Attempt(
            call.req.req_id,
            replica,
            request_body(self._model, tokens, call.req.params, remaining),
            self._reports,
            self.tokenizer.encode,
            READ_TIMEOUT_S,
        )
        replica.in_flight.add(call.req.req_id)
        call.attempt.start()
        return True

    def _detach(self, call: _Call) -> None:
        if call.attempt is not None:
            call.attempt.cancel()
            call.attempt.replica.in_flight.discard(call.req.req_id)
            call.attempt = None

    def _handle(self, report, events: list[TokenEvent]) -> None:
        if isinstance(report, HealthChange):
            return self._health(report)
        call = self._calls.get(report.attempt.req_id)
        if call is None or call.attempt is not report.attempt:
            return  # from an attempt cancelled since (abort, preemption, failover)
        req_id = call.req.req_id
        if isinstance(report, Streamed):
            call.output_ids.extend(report.ids)
            for i, token_id in enumerate(report.ids):
                events.append(TokenEvent(req_id, token_id, report.text if i == 0 else ""))
            if not report.ids and report.text:
                events.append(TokenEvent(req_id, -1, report.text))
        elif isinstance(report, Ended):
            replica = call.attempt.replica
            self._router.record(replica, call.req.prompt_ids + call.output_ids)
            self._calls.pop(req_id)
            self._detach(call)
            events.append(TokenEvent(req_id, -1, "", finished=True, finish_reason=report.finish))
        elif isinstance(report, Failed):
            if report.replica_fault:
                self._replica_down(call.attempt.replica, report.message)
            else:
                self._calls.pop(req_id)
                self._detach(call)
                events.append(
                    TokenEvent(
                        req_id, -1, "", finished=True, finish_reason=FinishReason.ERROR, error=report.message[:300]
                    )
                )

    def _health(self, change: HealthChange) -> None:
        replica = self._by_name[change.name]
        if change.healthy and not replica.healthy:
            if change.info is not None and change.info.model != self._model:
                log.error(
                    "replica %s came back serving %s, not %s: it stays out",
                    replica.name,
                    change.info.model,
                    self._model,
                )
                return
            replica.slots = self._slots(change.info) if change.info is not None else replica.slots
            replica.healthy = True
            log.info("replica %s is healthy again (%d slots)", replica.name, replica.slots)
        elif not change.healthy and replica.healthy:
            self._replica_down(replica, change.message)

    def _replica_down(self, replica: Replica, message: str) -> None:
        """Take a replica out and resume each call it held elsewhere, from what it had already streamed."""
        if replica.healthy:
            log.warning(
                "replica %s is down (%s): failing its %d calls over", replica.name, message, len(replica.in_flight)
            )
            replica.healthy = False
            replica.failures += 1
            self._prober.mark(replica.name, False)
            self._router.forget(replica)
        for req_id in list(replica.in_flight):
            call = self._calls[req_id]
            self._detach(call)
            self._fail_over(call, replica, message)

    def _fail_over(self, call: _Call, dead: Replica, message: str) -> None:
        healthy = [r for r in self._replicas if r.healthy]
        call.resumes += 1
        if call.resumes <= len(self._replicas) + 1:
            # a free slot first; else the least loaded healthy replica, over its bound (the call was admitted)
            if self._launch(call, [r for r in healthy if r.free > 0] or healthy):
                self.failovers += 1
                log.info(
                    "call %s resumes on %s after %d tokens",
                    call.req.req_id,
                    call.attempt.replica.name if call.attempt else "-",
                    len(call.output_ids),
                )
                return
        self._calls.pop(call.req.req_id)
        reason = "no healthy replica is left" if not healthy else "it failed over too many times"
        self._ready.append(
            TokenEvent(
                call.req.req_id,
                -1,
                "",
                finished=True,
                finish_reason=FinishReason.ERROR,
                error=f"replica {dead.name} failed ({message[:150]}) and {reason}",
            )
        )
