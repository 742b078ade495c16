"""The agent's side of the syscall interface: one DEALER connection to the kernel, one agent.

A connection is not thread-safe (ZeroMQ sockets are used from one thread): give each thread its own connect(); for
many calls at once from one thread, use the asyncio client (sdk.aconnect, sdk/aio.py).
Calls are synchronous; while one waits, the connection sends heartbeats so the kernel knows the agent is alive.
A call fails at once, never hangs, when there is no kernel at the address (ipc://: the socket is probed before the
first hello), when the connection to the kernel drops (the socket monitor reports it), or when the kernel answers
that it does not know this connection (it restarted: a heartbeat's `hello_required`); the next call says hello again.
Replies to calls given up on are dropped by id before they are decoded. A connection dropped without close() closes
itself when collected (a weakref finalizer), so neither gc nor the interpreter's exit hangs on it. Requests are built
and replies typed by sdk/protocol.py, the syscall methods themselves are sdk/calls.py's, shared with the asyncio client.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator

import zmq
from zmq.utils.monitor import parse_monitor_message

from ipc.curve import secure_client
from ipc.errors import ClientCode, ErrorCode
from sdk import protocol
from sdk.calls import Syscalls
from sdk.errors import KernelError, KernelTimeout
from sdk.protocol import DEFAULT_TIMEOUT_S, HEARTBEAT_S, HELLO_TIMEOUT_S, TOKEN_ENV, Request

__all__ = ["connect", "Kernel", "DEFAULT_TIMEOUT_S", "TOKEN_ENV"]


def connect(
    address: str | None = None,
    name: str | None = None,
    priority: int = 0,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    token: str | None = None,
    ephemeral: bool = False,
    tokens_per_minute: int | None = None,
    max_tokens_total: int | None = None,
) -> Kernel:
    """Connect to the kernel at address (default: $AIOS_ADDRESS, else the local kernel) and say hello. token: the
    admin token or a grant token (default: $AIOS_TOKEN), for capabilities over other agents. The agent's memory and
    files live in a space named after its principal and name, so a later run of the same agent finds them;
    ephemeral=True gives it a throwaway space instead. tokens_per_minute / max_tokens_total: lower token quotas than the
    kernel's own for this agent (a gateway key's), never higher."""
    return Kernel(address, name, priority, timeout, token, ephemeral, tokens_per_minute, max_tokens_total)


class Kernel(Syscalls):
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
        self._init_agent(address, name, priority, timeout, token, ephemeral, tokens_per_minute, max_tokens_total)
        protocol.check_listening(self.address)
        self._zmq = zmq.Context()
        self._socket = self._zmq.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RCVHWM, 0)
        self._monitor = self._socket.get_monitor_socket(protocol.MONITORED_EVENTS)
        # a connection dropped without close() releases its sockets when collected: holding them (not self) here
        # keeps them out of the garbage cycle, so the context is never collected, and term()ed, before they close
        self._release = weakref.finalize(self, protocol.release, self._zmq, self._socket, self._monitor)
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)
        try:
            secure_client(self._socket, self.address)  # tcp:// only; raises CurveKeyError with no usable key
            self._socket.connect(self.address)
            self._hello()
        except BaseException:
            self.close()
            raise

    def stream(
        self,
        messages: list[dict] | None = None,
        *,
        prompt: str | None = None,
        timeout: float | None = None,
        full: bool = False,
        **options,
    ) -> Iterator:
        """Text deltas as the kernel generates them, for chat messages or a raw prompt; full=True also yields the
        final Completion (usage, finish_reason, tool_calls) last. Leaving the loop early cancels the call."""
        syscall, body = protocol.stream_request(messages, prompt, options)
        req_id = self._send(syscall, body)
        try:
            for envelope in self._replies(req_id, syscall, timeout):
                if text := protocol.token_text(envelope):
                    yield text
                elif full and protocol.is_final(envelope):
                    yield envelope.body
        except GeneratorExit:  # the caller stopped reading: free the kernel's work
            self._cancel(req_id)
            raise

    def close(self) -> None:
        self._release()  # once: later calls do nothing

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- mechanism ---------------------------------------------------------------------------------------------------

    def _hello(self) -> None:
        hello = self._hello_request()
        try:
            result = self._run(hello, timeout=HELLO_TIMEOUT_S, retry_hello=False)
        except KernelTimeout:
            raise protocol.hello_timed_out(self.address) from None
        except KernelError as error:
            if error.code is not ClientCode.DISCONNECTED:
                raise
            raise protocol.hello_dropped(self.address) from None
        self.agent_id, self.model, self.scheduler = result.agent_id, result.model, result.scheduler

    def _run(self, request: Request, timeout: float | None = None, retry_hello: bool = True):
        """Send one syscall and return its result. An agent the kernel reaped (silent past its lease) says hello
        again, transparently, once."""
        try:
            return request.result(self._final(self._send(request.syscall, request.body), request.syscall, timeout))
        except KernelError as error:
            if not (retry_hello and error.code is ErrorCode.HELLO_REQUIRED):
                raise
        self._hello()
        return request.result(self._final(self._send(request.syscall, request.body), request.syscall, timeout))

    def _final(self, req_id: int, syscall: str, timeout: float | None):
        for envelope in self._replies(req_id, syscall, timeout):
            if protocol.is_final(envelope):
                return envelope.body
        raise AssertionError("unreachable: _replies ends with a result or raises")

    def _send(self, syscall: str, body) -> int:
        self._connection_events()  # a drop before this call is past: this call goes out on the new connection
        req_id = next(self._ids)
        self._socket.send(protocol.encode_request(syscall, req_id, body))
        return req_id

    def _connection_events(self) -> list[int]:
        events = []
        while self._monitor.get(zmq.EVENTS) & zmq.POLLIN:  # ~1 µs; poll(0) builds a Poller each time (~10 µs)
            events.append(parse_monitor_message(self._monitor.recv_multipart())["event"])
        return events

    def _replies(self, req_id: int, syscall: str, timeout: float | None) -> Iterator:
        """This request's token frames, then its result; a KernelError for an error reply; heartbeats while waiting."""
        timeout = self.timeout if timeout is None else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = HEARTBEAT_S if deadline is None else min(HEARTBEAT_S, deadline - time.monotonic())
            if wait <= 0:
                if syscall.startswith("llm."):
                    self._cancel(req_id)
                raise protocol.timed_out(syscall, timeout)
            ready = dict(self._poller.poll(wait * 1000))
            if self._monitor in ready:
                error = protocol.drop_error(self._connection_events(), self.address)
                if error is not None:
                    raise error
            if self._socket not in ready:
                if not ready:
                    protocol.check_listening(self.address)  # a kernel gone unnoticed by the monitor: fail now
                    self._socket.send(protocol.HEARTBEAT_FRAME)
                continue
            message = protocol.unpack(self._socket.recv())
            if message.get("id") not in (req_id, None):  # a late reply to a call given up on: not ours
                continue
            envelope = protocol.typed(message, syscall)
            yield envelope
            if protocol.is_final(envelope):
                return

    def _cancel(self, req_id: int) -> None:
        """Tell the kernel to stop a call; its replies (ack, and the call's own error) are dropped when they arrive."""
        self._socket.send(protocol.encode_cancel(next(self._ids), req_id))
