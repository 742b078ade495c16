"""The agent's side of the syscall interface: one DEALER connection to the kernel, one agent.

A connection is not thread-safe (ZeroMQ sockets are used from one thread): give each thread its own connect().
Calls are synchronous; while one waits, the connection sends heartbeats so the kernel knows the agent is alive.
A call fails at once, never hangs, when there is no kernel at the address (ipc://: the socket is probed before the
first hello), when the connection to the kernel drops (the socket monitor reports it), or when the kernel answers
that it does not know this connection (it restarted: a heartbeat's `hello_required`); the next call says hello again.
Replies to calls given up on are dropped by id before they are decoded.
"""
from __future__ import annotations

import errno
import itertools
import os
import socket
import sys
import time
from typing import Any, Iterator

import zmq
from zmq.utils.monitor import parse_monitor_message

from ipc.address import check_address, default_address, ipc_path
from ipc.codec import encode, type_reply, unpack_reply
from ipc.curve import secure_client
from ipc.errors import ErrorCode
from ipc.messages import (REPLY_ERROR, REPLY_RESULT, AgentInfo, Cancel, Chat, ChatMessage, Completion, Generate,
                          Grant, Heartbeat, Hello, Ping, ProcKill, ProcList, SetPriority, Stats)
from ipc.service_messages import Share
from sdk.errors import KernelError, KernelTimeout, KernelUnavailable
from sdk.services import Files, Memory, Tools

DEFAULT_TIMEOUT_S = 600.0
HEARTBEAT_S = 5.0
HELLO_TIMEOUT_S = 30.0           # a kernel that accepts the connection answers hello in milliseconds
TOKEN_ENV = "AIOS_TOKEN"         # a grant token handed to an agent by `aios run --grant`
_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


def connect(address: str | None = None, name: str | None = None, priority: int = 0,
            timeout: float | None = DEFAULT_TIMEOUT_S, token: str | None = None, ephemeral: bool = False) -> "Kernel":
    """Connect to the kernel at address (default: $AIOS_ADDRESS, else the local kernel) and say hello. token: the
    admin token or a grant token (default: $AIOS_TOKEN), for capabilities over other agents. The agent's memory and
    files live in a space named after its principal and name, so a later run of the same agent finds them;
    ephemeral=True gives it a throwaway space instead."""
    return Kernel(address, name, priority, timeout, token, ephemeral)


class Kernel:
    def __init__(self, address: str | None = None, name: str | None = None, priority: int = 0,
                 timeout: float | None = DEFAULT_TIMEOUT_S, token: str | None = None, ephemeral: bool = False):
        self.address = check_address(address or default_address())
        self.name = name or os.path.basename(sys.argv[0] or "agent") or "agent"
        self.priority = priority
        self.ephemeral = ephemeral
        self.memory = Memory(self._call)        # k.memory.add(...), k.memory.search(...)
        self.fs = Files(self._call)             # k.fs.write(...), k.fs.read(...)
        self.tools = Tools(self._call)          # k.tools.list(), k.tools.call(name, {...})
        self.timeout = timeout                  # default per-call timeout, seconds (None: wait forever)
        self._token = token or os.environ.get(TOKEN_ENV) or None
        self._ids = itertools.count(1)
        _check_listening(self.address)
        self._zmq = zmq.Context()
        self._socket = self._zmq.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RCVHWM, 0)
        self._monitor = self._socket.get_monitor_socket(zmq.EVENT_DISCONNECTED | _HANDSHAKE_FAILED)
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)
        try:
            secure_client(self._socket, self.address)     # tcp:// only; raises CurveKeyError with no usable key
            self._socket.connect(self.address)
            self._hello()
        except BaseException:
            self.close()
            raise

    # -- LLM syscalls ----------------------------------------------------------------------------------------------

    def chat(self, messages: list[dict], *, full: bool = False, timeout: float | None = None, **options
             ) -> str | Completion:
        """The assistant's reply to a conversation ([{"role": ..., "content": ...}, ...]). Options: max_tokens,
        temperature (0 = greedy), top_p, top_k, seed, stop, priority, ignore_eos, predicted_tokens, tools (OpenAI-
        shaped, e.g. k.tools.as_openai()) and tool_choice ("auto", "required", "none" or {"type": "function",
        "function": {"name": ...}}): the calls the model makes are in the Completion's tool_calls (full=True), their
        arguments always valid JSON for the tool's schema.
        full=True returns a Completion with usage and kernel-side timing."""
        completion = self._call("llm.chat", _chat(messages, options), timeout)
        return completion if full else completion.text

    def generate(self, prompt: str, *, full: bool = False, timeout: float | None = None, **options
                 ) -> str | Completion:
        """Raw completion of prompt (no chat template); same options as chat()."""
        completion = self._call("llm.generate", Generate(prompt=prompt, **options), timeout)
        return completion if full else completion.text

    def stream(self, messages: list[dict] | None = None, *, prompt: str | None = None, timeout: float | None = None,
               **options) -> Iterator[str]:
        """Text deltas as the kernel generates them, for chat messages or a raw prompt. Leaving the loop early
        cancels the call."""
        if (messages is None) == (prompt is None):
            raise ValueError("stream() takes either messages or prompt=")
        syscall, body = (("llm.chat", _chat(messages, {**options, "stream": True})) if prompt is None else
                         ("llm.generate", Generate(prompt=prompt, stream=True, **options)))
        req_id = self._send(syscall, body)
        try:
            for envelope in self._replies(req_id, syscall, timeout):
                if envelope.type != REPLY_RESULT and envelope.body.text:
                    yield envelope.body.text
        except GeneratorExit:      # the caller stopped reading: free the kernel's work
            self._cancel(req_id)
            raise

    # -- process and kernel syscalls ---------------------------------------------------------------------------------

    def ps(self) -> list[AgentInfo]:
        return self._call("proc.list", ProcList()).agents

    def kill(self, agent_id: str) -> None:
        self._call("proc.kill", ProcKill(agent_id=agent_id))

    def renice(self, agent_id: str, priority: int) -> None:
        self._call("proc.set_priority", SetPriority(agent_id=agent_id, priority=priority))

    def stats(self) -> dict[str, Any]:
        return self._call("kernel.stats", Stats()).values

    def ping(self) -> None:
        self._call("kernel.ping", Ping())

    def share(self, kind: str, grantee: str, mode: str = "r", prefix: str = "") -> None:
        """Let grantee (an agent name of this user, or "<principal>/<name>") read ("r") or read and write ("rw") this
        agent's memory (kind "mem") or files under prefix (kind "fs"); mode "none" revokes."""
        self._call("access.share", Share(kind=kind, grantee=grantee, mode=mode, prefix=prefix))

    def grant(self, capabilities: list[str]) -> str:
        """A token carrying capabilities this agent holds, for another agent to present (needs access.grant)."""
        return self._call("access.grant", Grant(capabilities=list(capabilities))).token

    def close(self) -> None:
        self._socket.disable_monitor()
        self._monitor.close(linger=0)
        self._socket.close(linger=0)
        self._zmq.term()

    def __enter__(self) -> "Kernel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- mechanism ---------------------------------------------------------------------------------------------------

    def _hello(self) -> None:
        try:
            result = self._call("hello", Hello(name=self.name, priority=self.priority, token=self._token,
                                               ephemeral=self.ephemeral),
                                timeout=HELLO_TIMEOUT_S, retry_hello=False)
        except KernelTimeout:
            raise KernelUnavailable(f"no kernel answered at {self.address} within {HELLO_TIMEOUT_S:.0f} s; start one "
                                    f"with `aiosd --address {self.address}`") from None
        self.agent_id, self.model, self.scheduler = result.agent_id, result.model, result.scheduler

    def _call(self, syscall: str, body, timeout: float | None = None, retry_hello: bool = True):
        """Send one syscall and return its result body. An agent the kernel reaped (silent past its lease) says
        hello again, transparently, once."""
        try:
            return self._final(self._send(syscall, body), syscall, timeout)
        except KernelError as error:
            if not (retry_hello and error.code == ErrorCode.HELLO_REQUIRED.value):
                raise
        self._hello()
        return self._final(self._send(syscall, body), syscall, timeout)

    def _final(self, req_id: int, syscall: str, timeout: float | None):
        for envelope in self._replies(req_id, syscall, timeout):
            if envelope.type == REPLY_RESULT:
                return envelope.body
        raise AssertionError("unreachable: _replies ends with a result or raises")

    def _send(self, syscall: str, body) -> int:
        self._connection_events()     # a drop before this call is past: this call goes out on the new connection
        req_id = next(self._ids)
        self._socket.send(encode(syscall, req_id, body))
        return req_id

    def _connection_events(self) -> list[int]:
        events = []
        while self._monitor.get(zmq.EVENTS) & zmq.POLLIN:     # ~1 µs; poll(0) builds a Poller each time (~10 µs)
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
                raise KernelTimeout(f"{syscall} got no reply within {timeout} s")
            ready = dict(self._poller.poll(wait * 1000))
            if self._monitor in ready:
                self._raise_on_drop(self._connection_events())
            if self._socket not in ready:
                if not ready:
                    self._socket.send(encode("agent.heartbeat", None, Heartbeat()))
                continue
            message = unpack_reply(self._socket.recv())
            if message.get("id") not in (req_id, None):      # a late reply to a call given up on: not ours
                continue
            envelope = type_reply(message, syscall)
            if envelope.type == REPLY_ERROR:
                raise KernelError(envelope.body.code, envelope.body.message)
            yield envelope
            if envelope.type == REPLY_RESULT:
                return

    def _raise_on_drop(self, events: list[int]) -> None:
        if any(event & _HANDSHAKE_FAILED for event in events):
            raise KernelError("unauthorized", f"the kernel at {self.address} refused this client's credentials")
        if zmq.EVENT_DISCONNECTED in events:
            raise KernelError("disconnected", "the connection to the kernel dropped (it stopped or restarted): the "
                                              "call is lost")

    def _cancel(self, req_id: int) -> None:
        """Tell the kernel to stop a call; its replies (ack, and the call's own error) are dropped when they arrive."""
        self._socket.send(encode("llm.cancel", next(self._ids), Cancel(request_id=req_id)))


def _check_listening(address: str) -> None:
    """KernelUnavailable at once when no kernel listens on an ipc:// address (ZeroMQ itself would wait forever)."""
    path = ipc_path(address)
    if path is None:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as error:
        why = "no socket file" if error.errno == errno.ENOENT else "nobody listens on it"
        raise KernelUnavailable(f"no kernel is running at {address} ({why}); start one with `aiosd &`"
                                + (f" or `aiosd --address {address}`" if address != default_address() else "")
                                ) from None
    finally:
        probe.close()


def _chat(messages: list[dict], options: dict) -> Chat:
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise TypeError("messages must be a list of {'role': ..., 'content': ...} dicts")
    return Chat(messages=[ChatMessage(**m) for m in messages], **options)
