"""Server-sent events for streamed completions, and cancelling the kernel call when the HTTP client goes away.

A stream is answered with HTTP 200 only once the kernel accepted the call and produced its first event (a text delta
or, for an empty answer, the final Completion): errors before that (bad options, over the agent's limits, too long
for the context) are real HTTP errors. After that, chunks follow OpenAI's shapes (chat.completion.chunk or
text_completion), an error becomes an `error` event and ends the stream, and a normal end is `data: [DONE]`.

When the client disconnects, the response task is cancelled (Starlette listens for http.disconnect), and closing
the event generator closes the SDK stream, which cancels the call in the kernel (sdk/aio.py). DisconnectAware closes
the generator itself rather than leaving it to garbage collection, so the cancel goes out at once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse

from ipc.messages import Completion
from kernel.gateway.errors import from_kernel
from sdk.errors import KernelError

DONE = b"data: [DONE]\n\n"
FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length", "tool_calls": "tool_calls"}


def event(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def usage(completion: Completion) -> dict:
    u = completion.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    }


def tool_calls(completion: Completion) -> list[dict]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in completion.tool_calls
    ]


async def until_disconnected(request: Request, work: Awaitable) -> Any:
    """work's result; if the client disconnects first, work is cancelled (and with it the kernel call) and
    CancelledError raised. work runs in this task (one watcher task per request, not two: this is the latency path)."""
    handler = asyncio.current_task()

    async def watch() -> None:
        await _disconnect(request)
        handler.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    finally:
        watcher.cancel()


async def first_event(request: Request, stream: AsyncIterator) -> Any:
    """The stream's first item (a text delta, or the Completion of an empty answer), so that errors before it are
    HTTP errors; the stream is closed (the call cancelled) if that fails or the client leaves."""
    try:
        return await until_disconnected(request, anext(stream))
    except BaseException:
        await stream.aclose()
        raise


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


class DisconnectAware(StreamingResponse):
    """A StreamingResponse that always watches for the client's disconnect (whatever ASGI spec version the server
    announces) and always closes its event generator when it ends."""

    def __init__(self, events: AsyncIterator[bytes]):
        super().__init__(
            events, media_type="text/event-stream", headers={"cache-control": "no-cache", "x-accel-buffering": "no"}
        )

    async def __call__(self, scope, receive, send) -> None:
        async def stream() -> None:
            await self.stream_response(send)

        async def listen() -> None:
            await self.listen_for_disconnect(receive)

        try:
            streaming, listening = asyncio.ensure_future(stream()), asyncio.ensure_future(listen())
            try:
                await asyncio.wait((streaming, listening), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (streaming, listening):
                    task.cancel()
                await asyncio.gather(streaming, listening, return_exceptions=True)
        finally:
            await self.body_iterator.aclose()


async def sse(
    first: Any,
    rest: AsyncIterator,
    chunk: Callable[[str], dict | list[dict]],
    finish: Callable[[Completion], list],
    usage_chunk: Callable[[Completion], dict] | None,
    buffer_text: bool,
    opening: dict | None = None,
) -> AsyncIterator[bytes]:
    """Events from a kernel stream (text deltas, then the Completion), first already read. chunk(text) makes a text
    delta's chunk (or chunks: none while a tool call's text is held back); finish(completion) the closing chunks;
    usage_chunk, if given, a final usage-only chunk.
    buffer_text: hold the text back for finish (a tool-call stream, whose raw text carries the calls' markup).
    opening: a chunk sent before anything else (chat's role delta)."""
    try:
        if opening is not None:
            yield event(opening)
        item = first
        while True:
            if isinstance(item, Completion):
                for payload in finish(item):
                    yield event(payload)
                if usage_chunk is not None:
                    yield event(usage_chunk(item))
                yield DONE
                return
            if not buffer_text:
                made = chunk(item)
                for payload in made if isinstance(made, list) else (made,):
                    yield event(payload)
            item = await anext(rest)
    except KernelError as error:
        yield event(from_kernel(error).body())
    finally:
        await rest.aclose()
