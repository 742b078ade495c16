"""The gateway's HTTP API, OpenAI-compatible: GET /v1/models, POST /v1/chat/completions, POST /v1/completions,
POST /v1/responses (kernel/gateway/responses.py), the AIOS SDK's POST /query (kernel/gateway/cerebrum.py), GET
/metrics for Prometheus (kernel/gateway/metrics.py), and the operator's dashboard under /ui (kernel/gateway/ui/: it
authenticates its own requests, so a browser can log in).

create_app(address, keys_path, ui_interval_s) builds a FastAPI app (no module state: everything it holds hangs off
the app).
Each request passes RequestGuard (kernel/gateway/guard.py) before its body is read: its API key (Authorization: Bearer)
names the kernel agent it runs as (kernel/gateway/keys.py; without a keys file every request is the one agent
"gateway", and must come from a local program, not a web page); an x-aios-priority header asks for a priority
within the key's allowance, sent as the call's priority hint relative to the agent's own. The body is parsed strictly
(kernel/gateway/schemas.py), the model checked against the kernel's, and the call made through that agent's AsyncKernel
connection; the kernel's errors become HTTP errors (kernel/gateway/errors.py). Unstreamed answers carry the kernel's
own time for the call in x-aios-kernel-ms. A client that disconnects before its
answer, streamed or not, has its call cancelled in the kernel (kernel/gateway/streaming.py).
"""

from __future__ import annotations

import contextlib
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ipc.messages import PRIORITY_MAX, PRIORITY_MIN, Completion
from kernel.gateway import cerebrum, errors, metrics, responses, ui
from kernel.gateway.agents import AgentPool
from kernel.gateway.errors import APIError, bad_request
from kernel.gateway.guard import KEY_STATE, RequestGuard
from kernel.gateway.keys import KeyEntry, KeyRing
from kernel.gateway.response_store import ResponseStore
from kernel.gateway.schemas import MAX_BODY_BYTES, ChatRequest, CompletionRequest, parse
from kernel.gateway.streaming import (
    FINISH_REASONS,
    DisconnectAware,
    first_event,
    sse,
    tool_calls,
    until_disconnected,
    usage,
)
from kernel.gateway.tool_stream import ArgumentsDelta, CallStart, ContentDelta, Delta, ToolDeltas

PRIORITY_HEADER = "x-aios-priority"
KERNEL_TIME_HEADER = "x-aios-kernel-ms"  # unstreamed answers: the kernel's time from arrival to reply


def create_app(address: str, keys_path: str | None = None, ui_interval_s: float = ui.DEFAULT_INTERVAL_S) -> FastAPI:
    keyring = KeyRing(keys_path) if keys_path else None  # KeyFileError now, not at the first request
    pool = AgentPool(address)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await dashboard.close()
        await metrics.close(_app)
        await pool.close()

    app = FastAPI(title="AIOS gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.pool = pool
    errors.install(app)
    # the key (or keyless origin) before any body byte; the dashboard checks its own keys (Bearer or session cookie)
    app.add_middleware(RequestGuard, keyring=keyring, self_authenticated=(ui.PREFIX,))
    dashboard = ui.install(app, address, keyring, pool, ui_interval_s)
    app.state.dashboard = dashboard
    app.include_router(metrics.router)  # GET /metrics for Prometheus (kernel/gateway/metrics.py)

    async def agent_for(request: Request, model: str | None = None):
        entry = request.scope["state"][KEY_STATE]
        kernel = await pool.kernel(entry)
        if model is not None and model != kernel.model:
            raise APIError(
                404,
                f"the model {model[:80]!r} does not exist: this kernel serves {kernel.model!r}",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
        return entry, kernel

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        _, kernel = await agent_for(request)
        return JSONResponse({"object": "list", "data": [_model_card(kernel.model)]})

    @app.get("/v1/models/{model_id:path}")
    async def model(request: Request, model_id: str) -> JSONResponse:
        _, kernel = await agent_for(request, model_id)
        return JSONResponse(_model_card(kernel.model))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = parse(ChatRequest, await _read_body(request))
        entry, kernel = await agent_for(request, body.model)
        options = {**body.kernel_options(), **_priority(request, entry)}
        messages = body.kernel_messages()
        reply_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not body.stream:
            completion = await until_disconnected(request, kernel.chat(messages, full=True, **options))
            return JSONResponse(_chat_body(completion, reply_id, created, kernel.model), headers=_timing(completion))

        def chunk(delta: dict, finish_reason: str | None = None) -> dict:
            return {
                "id": reply_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": kernel.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
            }

        # a chat offering tools: its raw text becomes content or call deltas as it comes (tool_stream.py)
        deltas = ToolDeltas() if body.parses_tools else None

        def text_chunks(text: str) -> list[dict]:
            if deltas is None:
                return [chunk({"content": text})]
            return [chunk(chat_delta(d)) for d in deltas.feed(text)]

        def finish(completion: Completion) -> list[dict]:
            closing = [] if deltas is None else [chunk(chat_delta(d)) for d in deltas.finish(completion)]
            reason = (
                "tool_calls"
                if deltas is not None and deltas.calls
                else FINISH_REASONS.get(completion.finish_reason, "stop")
            )
            return closing + [chunk({}, reason)]

        def usage_chunk(completion: Completion) -> dict:
            return {
                "id": reply_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": kernel.model,
                "choices": [],
                "usage": usage(completion),
            }

        stream = kernel.stream(messages, full=True, **options)
        first = await first_event(request, stream)
        return DisconnectAware(
            sse(
                first,
                stream,
                text_chunks,
                finish,
                usage_chunk if body.include_usage else None,
                buffer_text=False,
                opening=chunk({"role": "assistant", "content": ""}),
            )
        )

    app.state.responses = ResponseStore()
    responses.install(app, agent_for, _priority, _read_body, app.state.responses)
    cerebrum.install(app, agent_for, _priority, _read_body)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = parse(CompletionRequest, await _read_body(request))
        entry, kernel = await agent_for(request, body.model)
        options = {**body.kernel_options(), **_priority(request, entry)}
        reply_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        if not body.stream:
            completion = await until_disconnected(request, kernel.generate(body.kernel_prompt(), full=True, **options))
            return JSONResponse(
                {
                    "id": reply_id,
                    "object": "text_completion",
                    "created": created,
                    "model": kernel.model,
                    "system_fingerprint": None,
                    "choices": [
                        {
                            "index": 0,
                            "text": completion.text,
                            "logprobs": None,
                            "finish_reason": FINISH_REASONS.get(completion.finish_reason, "stop"),
                        }
                    ],
                    "usage": usage(completion),
                },
                headers=_timing(completion),
            )

        def chunk(text: str, finish_reason: str | None = None) -> dict:
            return {
                "id": reply_id,
                "object": "text_completion",
                "created": created,
                "model": kernel.model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
            }

        def usage_chunk(completion: Completion) -> dict:
            return {
                "id": reply_id,
                "object": "text_completion",
                "created": created,
                "model": kernel.model,
                "choices": [],
                "usage": usage(completion),
            }

        stream = kernel.stream(prompt=body.kernel_prompt(), full=True, **options)
        first = await first_event(request, stream)
        events = sse(
            first,
            stream,
            chunk,
            lambda c: [chunk("", FINISH_REASONS.get(c.finish_reason, "stop"))],
            usage_chunk if body.include_usage else None,
            buffer_text=False,
        )
        return DisconnectAware(events)

    return app


def _priority(request: Request, entry: KeyEntry) -> dict:
    """The call's priority hint: the header's priority relative to the agent's own, if the key allows it."""
    header = request.headers.get(PRIORITY_HEADER)
    if header is None:
        return {}
    try:
        wanted = int(header)
    except ValueError:
        raise bad_request(f"{PRIORITY_HEADER} must be an integer, got {header[:20]!r}", PRIORITY_HEADER) from None
    if not entry.allows(wanted):
        raise APIError(
            403,
            f"{PRIORITY_HEADER} {wanted} is outside this key's allowance [{PRIORITY_MIN}, {entry.max_priority}]",
            "permission_error",
            "priority_not_allowed",
        )
    return {"priority": max(PRIORITY_MIN, min(PRIORITY_MAX, wanted)) - entry.priority}


async def _read_body(request: Request) -> bytes:
    """The body, refused with 413 past MAX_BODY_BYTES before it is all held in memory."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise APIError(413, f"request body over {MAX_BODY_BYTES} bytes", "invalid_request_error", "too_large")
    chunks, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > MAX_BODY_BYTES:
            raise APIError(413, f"request body over {MAX_BODY_BYTES} bytes", "invalid_request_error", "too_large")
        chunks.append(part)
    return b"".join(chunks)


def _timing(completion: Completion) -> dict:
    """The kernel's own time for the call: what the HTTP path adds is the client's wall time minus this."""
    return {KERNEL_TIME_HEADER: f"{completion.timing.total_s * 1e3:.3f}"}


def _model_card(model: str) -> dict:
    return {"id": model, "object": "model", "created": 0, "owned_by": "aios"}


def chat_delta(delta: Delta) -> dict:
    """A tool-stream delta as a chat.completion.chunk's delta, as OpenAI sends them: the call's id, type and name
    with empty arguments first, then argument fragments under the same index."""
    if isinstance(delta, ContentDelta):
        return {"content": delta.text}
    if isinstance(delta, CallStart):
        return {
            "tool_calls": [
                {
                    "index": delta.index,
                    "id": delta.id,
                    "type": "function",
                    "function": {"name": delta.name, "arguments": ""},
                }
            ]
        }
    assert isinstance(delta, ArgumentsDelta)
    return {"tool_calls": [{"index": delta.index, "function": {"arguments": delta.text}}]}


def _chat_body(completion: Completion, reply_id: str, created: int, model: str) -> dict:
    message = {
        "role": "assistant",
        "content": completion.text if completion.text or not completion.tool_calls else None,
    }
    if completion.tool_calls:
        message["tool_calls"] = tool_calls(completion)
    return {
        "id": reply_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(completion.finish_reason, "stop"),
            }
        ],
        "usage": usage(completion),
    }
