"""The asyncio client: `k = await sdk.aconnect(...)` gives an AsyncKernel with the sync Kernel's calls, each awaited
(`await k.chat(...)`, `await k.ps()`, `await k.memory.add(...)`), and `k.stream(...)` as an async iterator.

Contract:
- One connection, one agent, one event loop: any number of tasks on that loop may call at once. It is one DEALER
  socket (zmq.asyncio); a reader task routes each reply by its call id to that call's queue, so calls never see each
  other's frames, and a reply to a call nobody waits for any more (timed out, cancelled) is dropped unread.
- A call that times out, a task cancelled mid-call, or a stream left early (break, aclose) cancels the call in the
  kernel (llm.* calls), as the sync client does.
- When the connection drops (the kernel stopped or restarted; the socket monitor reports it), every call in flight
  fails at once with KernelError("disconnected") (on ipc://, within HEARTBEAT_S with KernelUnavailable when the
  kernel is gone but the monitor missed it); a later call on an ipc:// address with nobody listening fails at
  once with KernelUnavailable; once a kernel is back, the next call says hello again (transparently, once).
- close() (or `async with`) ends the connection; calls still in flight fail with "disconnected". A connection
  dropped without close() closes its sockets and context when collected (a weakref finalizer), so gc and the
  interpreter's exit never hang on it.
Requests are built and replies typed by sdk/protocol.py, the syscall methods are sdk/calls.py's: the same code as the
sync client's. Not thread-safe: use it from the loop it was made on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from ipc.curve import secure_client
from ipc.errors import ClientCode, ErrorCode, ProtocolError
from ipc.messages import REPLY_ERROR
from sdk import protocol
from sdk.calls import Syscalls
from sdk.errors import KernelError, KernelTimeout
from sdk.protocol import DEFAULT_TIMEOUT_S, HEARTBEAT_S, HELLO_TIMEOUT_S, Request

log = logging.getLogger("sdk.aio")

__all__ = ["aconnect", "AsyncKernel"]


async def aconnect(
    address: str | None = None,
    name: str | None = None,
    priority: int = 0,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    token: str | None = None,
    ephemeral: bool = False,
    tokens_per_minute: int | None = None,
    max_tokens_total: int | None = None,
) -> AsyncKernel:
    """connect()'s asyncio twin: the same arguments, an AsyncKernel that has said hello."""
    kernel = AsyncKernel(address, name, priority, timeout, token, ephemeral, tokens_per_minute, max_tokens_total)
    try:
        await kernel._open()
    except BaseException:
        await kernel.close()
        raise
    return kernel


class AsyncKernel(Syscalls):
    def __init__(
        self,
        address: str | None = None,
        name: str | None = None,
        priority: int = 0,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        token: str | None = None,
        ephemeral: bool = False,
        tokens_per_minute: int | None = None,
        max_tokens_total: int | None = None,
    ):
        """Use aconnect(): the connection opens (and says hello) in a coroutine."""
        self._init_agent(address, name, priority, timeout, token, ephemeral, tokens_per_minute, max_tokens_total)
        self._pending: dict[int, asyncio.Queue] = {}  # call id → its replies (raw envelopes, or a KernelError)
        self._tasks: list[asyncio.Task] = []
        self._zmq = self._socket = self._monitor = None
        self._release = None  # the finalizer that closes the sockets, once they exist
        self._connected = False  # the monitor's view; False until the first CONNECTED event
        self._closed = False
        self._hellos = 0  # hellos said: a call that saw hello_required re-says it only once per hello
        self._hello_lock = asyncio.Lock()

    # -- streaming ---------------------------------------------------------------------------------------------------

    async def stream(
        self,
        messages: list[dict] | None = None,
        *,
        prompt: str | None = None,
        timeout: float | None = None,
        full: bool = False,
        **options,
    ) -> AsyncIterator[Any]:
        """Text deltas as the kernel generates them, for chat messages or a raw prompt; full=True also yields the
        final Completion (usage, finish_reason, tool_calls) last. Leaving early (break, aclose, task cancelled)
        cancels the call in the kernel."""
        syscall, body = protocol.stream_request(messages, prompt, options)
        async with contextlib.aclosing(self._exchange(syscall, body, timeout)) as replies:
            async for envelope in replies:
                if text := protocol.token_text(envelope):
                    yield text
                elif full and protocol.is_final(envelope):
                    yield envelope.body

    # -- lifetime ------------------------------------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._fail_pending(KernelError(ClientCode.DISCONNECTED, "the connection was closed"))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._release is not None:
            self._release()

    async def __aenter__(self) -> AsyncKernel:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- mechanism ---------------------------------------------------------------------------------------------------

    async def _open(self) -> None:
        protocol.check_listening(self.address)
        self._zmq = zmq.asyncio.Context()
        self._socket = self._zmq.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RCVHWM, 0)
        self._monitor = self._socket.get_monitor_socket(protocol.MONITORED_EVENTS | zmq.EVENT_CONNECTED)
        self._release = weakref.finalize(self, protocol.release, self._zmq, self._socket, self._monitor)
        secure_client(self._socket, self.address)  # tcp:// only; raises CurveKeyError with no usable key
        self._socket.connect(self.address)
        self._connected = True  # ZeroMQ queues what is sent until the connection is up
        self._tasks = [
            asyncio.create_task(coro, name=f"aios-{what}")
            for what, coro in (("reader", self._read()), ("monitor", self._watch()), ("heartbeat", self._heartbeat()))
        ]
        await self._hello()

    async def _hello(self) -> None:
        hello = self._hello_request()
        try:
            result = await self._run(hello, timeout=HELLO_TIMEOUT_S, retry_hello=False)
        except KernelTimeout:
            raise protocol.hello_timed_out(self.address) from None
        except KernelError as error:
            if error.code is not ClientCode.DISCONNECTED:
                raise
            raise protocol.hello_dropped(self.address) from None
        self.agent_id, self.model, self.scheduler = result.agent_id, result.model, result.scheduler
        self._hellos += 1

    async def _run(self, request: Request, timeout: float | None = None, retry_hello: bool = True) -> Any:
        """Send one syscall and return its result. When the kernel no longer knows this connection (it restarted, or
        reaped a silent agent), hello again, once for all the calls that learned it at the same time, and retry."""
        hellos = self._hellos
        try:
            return request.result(await self._final(request, timeout))
        except KernelError as error:
            if not (retry_hello and error.code is ErrorCode.HELLO_REQUIRED):
                raise
        async with self._hello_lock:
            if self._hellos == hellos:
                await self._hello()
        return request.result(await self._final(request, timeout))

    async def _final(self, request: Request, timeout: float | None) -> Any:
        async with contextlib.aclosing(self._exchange(request.syscall, request.body, timeout)) as replies:
            async for envelope in replies:
                if protocol.is_final(envelope):
                    return envelope.body
        raise AssertionError("unreachable: _exchange ends with a result or raises")

    async def _exchange(self, syscall: str, body, timeout: float | None) -> AsyncIterator:
        """One call: its token envelopes, then its result; KernelError for an error reply, a dropped connection or a
        timeout. The call is cancelled in the kernel if it ends here before the kernel ended it."""
        if self._closed:
            raise KernelError(ClientCode.DISCONNECTED, "the connection was closed")
        if not self._connected:  # dropped earlier: fail now if nobody listens, not after the timeout
            protocol.check_listening(self.address)
        timeout = self.timeout if timeout is None else timeout
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        req_id = next(self._ids)
        replies: asyncio.Queue = asyncio.Queue()
        self._pending[req_id] = replies
        ended = False  # the kernel holds nothing more of this call
        try:
            self._send(protocol.encode_request(syscall, req_id, body))
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        item = await replies.get()
                except TimeoutError:
                    raise protocol.timed_out(syscall, timeout) from None
                if isinstance(item, KernelError):  # the connection dropped or was closed
                    ended = True
                    raise item
                ended = item.get("type") == REPLY_ERROR
                envelope = protocol.typed(item, syscall)
                ended = protocol.is_final(envelope)
                yield envelope
                if ended:
                    return
        finally:
            self._pending.pop(req_id, None)
            if not ended and syscall.startswith("llm.") and not self._closed:
                self._send(protocol.encode_cancel(next(self._ids), req_id))

    def _send(self, frame: bytes) -> None:
        """Queue a frame without awaiting: it goes out at once unless the socket is at its high-water mark, and a call
        being cancelled can still send its llm.cancel."""
        sent = self._socket.send(frame)
        if not sent.done():
            sent.add_done_callback(_retrieve)

    def _fail_pending(self, error: KernelError) -> None:
        for replies in self._pending.values():
            replies.put_nowait(error)

    async def _read(self) -> None:
        """Route each kernel frame to the call it answers; drop late replies. A frame with no id answers a
        notification (a heartbeat's hello_required): every call in flight learns it."""
        while True:
            frame = await self._socket.recv()
            try:
                message = protocol.unpack(frame)
            except ProtocolError as error:
                log.warning("dropped a malformed frame from the kernel: %s", error)
                continue
            req_id = message.get("id")
            if req_id is None:
                if message.get("type") == REPLY_ERROR:
                    for replies in self._pending.values():
                        replies.put_nowait(message)
                continue
            replies = self._pending.get(req_id)
            if replies is not None:
                replies.put_nowait(message)

    async def _watch(self) -> None:
        while True:
            event = parse_monitor_message(await self._monitor.recv_multipart())["event"]
            if event == zmq.EVENT_CONNECTED:
                self._connected = True
                continue
            error = protocol.drop_error([event], self.address)
            if error is not None:
                self._connected = False
                self._fail_pending(error)

    async def _heartbeat(self) -> None:
        """While calls wait, tell the kernel this agent is alive (a tcp:// agent silent past its lease is reaped), and
        check that a kernel still listens on an ipc:// address: one that died as ZeroMQ reconnected into its closing
        socket leaves no DISCONNECTED event behind, and the calls would otherwise wait out their timeouts."""
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            if not self._pending:
                continue
            try:
                protocol.check_listening(self.address)
            except KernelError as error:
                self._connected = False
                self._fail_pending(error)
                continue
            self._send(protocol.HEARTBEAT_FRAME)


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # a send that failed as the socket closed: nothing waits on it
