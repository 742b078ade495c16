"""POST /v1/responses: OpenAI's Responses API over a kernel chat call (GET and DELETE /v1/responses/{id} are not
served: stored responses are conversation state, not records).

The request (responses_schema.py) becomes one llm.chat: instructions, the stored conversation of
previous_response_id (response_store.py, this key's own), then this request's input. The answer becomes output items:
a "message" with one output_text part for the text, one "function_call" item per tool call (call_id is the id the
client answers with a function_call_output). Unless store is false, the conversation through this answer is kept
under the response's id, for a follow-up's previous_response_id.

Streamed, the events are OpenAI's, each `event: <type>` + `data: {...}` with a sequence_number: response.created and
response.in_progress, then per item output_item.added, (content_part.added, output_text.delta..., output_text.done,
content_part.done) or (function_call_arguments.delta..., function_call_arguments.done), output_item.done, and
response.completed (response.incomplete when cut at max_output_tokens). Tool calls stream as they are generated
(tool_stream.py). A kernel error after the first event is an `error` event; errors before it are HTTP errors, as for
chat (streaming.py).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ipc.messages import Completion
from kernel.gateway.errors import APIError, from_kernel
from kernel.gateway.response_store import ResponseStore
from kernel.gateway.responses_schema import ResponsesRequest
from kernel.gateway.schemas import parse
from kernel.gateway.streaming import DisconnectAware, first_event, until_disconnected
from kernel.gateway.tool_stream import ArgumentsDelta, CallStart, ContentDelta, Delta, ToolDeltas
from sdk.errors import KernelError


def install(
    app: FastAPI,
    agent_for: Callable,
    options_for: Callable,
    read_body: Callable[[Request], Awaitable],
    store: ResponseStore,
) -> None:
    """agent_for(request, model) -> (entry, kernel); options_for(request, entry) -> the call's priority options."""

    @app.post("/v1/responses")
    async def create_response(request: Request):
        body = parse(ResponsesRequest, await read_body(request))
        entry, kernel = await agent_for(request, body.model)
        options = {**body.kernel_options(), **options_for(request, entry)}
        history: list[dict] = []
        if body.previous_response_id is not None:
            history = store.get(entry.id, body.previous_response_id)
            if history is None:
                raise APIError(
                    404,
                    f"no response {body.previous_response_id[:80]!r} is stored for this key",
                    "invalid_request_error",
                    "previous_response_not_found",
                    "previous_response_id",
                )
        conversation = history + body.new_messages()
        system = [{"role": "system", "content": body.instructions}] if body.instructions else []
        answer = Answer(body, kernel.model)

        def keep(completion: Completion) -> None:
            if body.store is not False:
                store.put(entry.id, answer.id, conversation + [answer.assistant_message()])

        if not body.stream:
            completion = await until_disconnected(request, kernel.chat(system + conversation, full=True, **options))
            answer.take(completion)
            keep(completion)
            return JSONResponse(answer.response(completion))
        stream = kernel.stream(system + conversation, full=True, **options)
        first = await first_event(request, stream)
        return DisconnectAware(answer.events(first, stream, keep))


class Answer:
    """One response being built: its output items, from a whole Completion (take) or from a stream (events)."""

    def __init__(self, body: ResponsesRequest, model: str):
        self.body, self.model = body, model
        self.id, self.created = f"resp_{uuid.uuid4().hex}", int(time.time())
        self.items: list[dict] = []
        self._sequence = 0
        self._deltas = ToolDeltas() if body.kernel_options().get("tools") and body.tool_choice != "none" else None

    # ---- whole answers ---------------------------------------------------------------------------------------------
    def take(self, completion: Completion) -> None:
        if completion.text or not completion.tool_calls:
            self.items.append(_message(completion.text, "completed"))
        for call in completion.tool_calls:
            self.items.append(_function_call(call.id, call.name, call.arguments, "completed"))

    def assistant_message(self) -> dict:
        text = "".join(part["text"] for item in self.items if item["type"] == "message" for part in item["content"])
        calls = [
            {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"] or "{}"},
            }
            for item in self.items
            if item["type"] == "function_call"
        ][:16]
        return {"role": "assistant", "content": text, **({"tool_calls": calls} if calls else {})}

    def response(self, completion: Completion | None, status: str | None = None) -> dict:
        body = self.body
        if status is None:
            status = "incomplete" if completion is not None and completion.finish_reason == "length" else "completed"
        tools = [
            {
                "type": "function",
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters,
                "strict": bool(t.strict),
            }
            for t in body.tools or ()
        ]
        choice = body.tool_choice or "auto"
        fmt = (
            body.text.format.model_dump(by_alias=True, exclude_none=True)
            if body.text and body.text.format
            else {"type": "text"}
        )
        usage = (
            None
            if completion is None
            else {
                "input_tokens": completion.usage.prompt_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": completion.usage.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": completion.usage.prompt_tokens + completion.usage.completion_tokens,
            }
        )
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "model": self.model,
            "output": self.items,
            "usage": usage,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": body.instructions,
            "metadata": body.metadata or {},
            "tools": tools,
            "tool_choice": choice,
            "parallel_tool_calls": bool(body.parallel_tool_calls),
            "previous_response_id": body.previous_response_id,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "max_output_tokens": body.max_output_tokens,
            "store": body.store is not False,
            "text": {"format": fmt},
            "truncation": "disabled",
            "reasoning": None,
            "user": body.user,
        }

    # ---- streamed answers ------------------------------------------------------------------------------------------
    async def events(self, first: Any, rest: AsyncIterator, keep: Callable[[Completion], None]) -> AsyncIterator[bytes]:
        try:
            yield self._event("response.created", response=self.response(None, "in_progress"))
            yield self._event("response.in_progress", response=self.response(None, "in_progress"))
            item = first
            while not isinstance(item, Completion):
                for delta in self._feed(item):
                    for payload in self._render(delta):
                        yield payload
                item = await anext(rest)
            for delta in self._deltas.finish(item) if self._deltas is not None else []:
                for payload in self._render(delta):
                    yield payload
            if not self.items:  # an empty answer is still one (empty) message, as unstreamed
                for payload in self._render(ContentDelta("")):
                    yield payload
            for payload in self._close_open():
                yield payload
            keep(item)
            response = self.response(item)
            kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
            yield self._event(kind, response=response)
        except KernelError as error:
            failure = from_kernel(error)
            yield self._event("error", code=failure.code, message=failure.message, param=None)
        finally:
            await rest.aclose()

    def _feed(self, text: str) -> list[Delta]:
        return self._deltas.feed(text) if self._deltas is not None else ([ContentDelta(text)] if text else [])

    def _render(self, delta: Delta) -> list[bytes]:
        out: list[bytes] = []
        last = self.items[-1] if self.items else None
        if isinstance(delta, ContentDelta):
            if last is None or last["type"] != "message" or last["status"] != "in_progress":
                out += self._close_open()
                self.items.append(_message("", "in_progress"))
                index, item = len(self.items) - 1, self.items[-1]
                out.append(self._event("response.output_item.added", output_index=index, item={**item, "content": []}))
                out.append(
                    self._event(
                        "response.content_part.added",
                        item_id=item["id"],
                        output_index=index,
                        content_index=0,
                        part=_text_part(""),
                    )
                )
            index, item = len(self.items) - 1, self.items[-1]
            item["content"][0]["text"] += delta.text
            out.append(
                self._event(
                    "response.output_text.delta",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    delta=delta.text,
                    logprobs=[],
                )
            )
        elif isinstance(delta, CallStart):
            out += self._close_open()
            self.items.append(_function_call(delta.id, delta.name, "", "in_progress"))
            out.append(
                self._event("response.output_item.added", output_index=len(self.items) - 1, item=dict(self.items[-1]))
            )
        elif isinstance(delta, ArgumentsDelta):
            index, item = len(self.items) - 1, self.items[-1]
            item["arguments"] += delta.text
            out.append(
                self._event(
                    "response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=delta.text
                )
            )
        return out

    def _close_open(self) -> list[bytes]:
        if not self.items or self.items[-1]["status"] != "in_progress":
            return []
        index, item = len(self.items) - 1, self.items[-1]
        item["status"] = "completed"
        out = []
        if item["type"] == "message":
            part = item["content"][0]
            out.append(
                self._event(
                    "response.output_text.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    text=part["text"],
                    logprobs=[],
                )
            )
            out.append(
                self._event(
                    "response.content_part.done", item_id=item["id"], output_index=index, content_index=0, part=part
                )
            )
        else:
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    arguments=item["arguments"],
                )
            )
        out.append(self._event("response.output_item.done", output_index=index, item=item))
        return out

    def _event(self, kind: str, **fields) -> bytes:
        payload = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return f"event: {kind}\ndata: ".encode() + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _message(text: str, status: str) -> dict:
    return {
        "type": "message",
        "id": f"msg_{uuid.uuid4().hex}",
        "status": status,
        "role": "assistant",
        "content": [_text_part(text)],
    }


def _text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _function_call(call_id: str, name: str, arguments: str, status: str) -> dict:
    return {
        "type": "function_call",
        "id": f"fc_{uuid.uuid4().hex}",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }
