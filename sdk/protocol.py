"""What the sync and the asyncio clients share: building syscall bodies, typing replies, and the SDK's own errors.

Neither client builds a frame or reads one any other way, so both speak exactly the same protocol: a request is
(syscall, typed body) encoded by encode_request; a kernel frame is unpacked once (unpack), its id routed by the
client, then typed against the syscall it answers (typed), error replies becoming KernelError. The connection-level
errors (no kernel, dropped connection, refused credentials, timeout) are made here too, so their codes and wording
match whichever client raises them.
release() is how both clients let go of their sockets, from close() or from a weakref finalizer when a connection is
dropped unclosed (without it, collecting the context would block in term() on the still-open sockets).
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from ipc.address import default_address, ipc_path
from ipc.codec import Envelope, encode, type_reply, unpack_reply
from ipc.errors import ClientCode, ErrorCode
from ipc.messages import (
    REPLY_ERROR,
    REPLY_RESULT,
    Cancel,
    Chat,
    ChatMessage,
    Generate,
    Heartbeat,
    Hello,
    ResponseFormat,
)
from sdk.errors import KernelError, KernelTimeout, KernelUnavailable

DEFAULT_TIMEOUT_S = 600.0
HEARTBEAT_S = 5.0
HELLO_TIMEOUT_S = 30.0  # a kernel that accepts the connection answers hello in milliseconds
TOKEN_ENV = "AIOS_TOKEN"  # a grant token handed to an agent by `aios run --grant`
HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
MONITORED_EVENTS = zmq.EVENT_DISCONNECTED | HANDSHAKE_FAILED
HEARTBEAT_FRAME = encode("agent.heartbeat", None, Heartbeat())


@dataclass(frozen=True)
class Request:
    """One syscall as a client sends it, and how its result body becomes what the caller gets back."""

    syscall: str
    body: Any
    extract: Callable[[Any], Any] | None = None

    def result(self, body: Any) -> Any:
        return body if self.extract is None else self.extract(body)


def encode_request(syscall: str, req_id: int, body: Any) -> bytes:
    return encode(syscall, req_id, body)


def encode_cancel(cancel_id: int, req_id: int) -> bytes:
    return encode("llm.cancel", cancel_id, Cancel(request_id=req_id))


def hello_body(
    name: str,
    priority: int,
    token: str | None,
    ephemeral: bool,
    tokens_per_minute: int | None = None,
    max_tokens_total: int | None = None,
) -> Hello:
    """tokens_per_minute / max_tokens_total ask the kernel for lower token quotas than its own (never higher)."""
    return Hello(
        name=name,
        priority=priority,
        token=token,
        ephemeral=ephemeral,
        tokens_per_minute=tokens_per_minute,
        max_tokens_total=max_tokens_total,
    )


def chat_body(messages: list[dict], options: dict) -> Chat:
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise TypeError("messages must be a list of {'role': ..., 'content': ...} dicts")
    if isinstance(options.get("response_format"), dict):
        options = {**options, "response_format": response_format(options["response_format"])}
    return Chat(messages=[ChatMessage(**m) for m in messages], **options)


def response_format(spec: dict) -> ResponseFormat:
    """OpenAI's response_format ({"type": "json_object"}, {"type": "json_schema", "json_schema": {"name", "schema",
    "strict"}}, {"type": "text"}) as the protocol's ResponseFormat; ValueError if it is none of those."""
    kind = spec.get("type")
    if kind in ("text", "json_object"):
        return ResponseFormat(type=kind)
    inner = spec.get("json_schema")
    if kind != "json_schema" or not isinstance(inner, dict) or not isinstance(inner.get("schema", {}), (dict, bool)):
        raise ValueError(
            'response_format must be {"type": "text" | "json_object"} or {"type": "json_schema", '
            '"json_schema": {"name": ..., "schema": {...}}}'
        )
    return ResponseFormat(
        type=kind,
        schema=inner.get("schema", {}),
        name=str(inner.get("name") or "response"),
        strict=bool(inner.get("strict", True)),
    )


def generate_body(prompt: str, options: dict) -> Generate:
    return Generate(prompt=prompt, **options)


def stream_request(messages: list[dict] | None, prompt: str | None, options: dict) -> tuple[str, Any]:
    """(syscall, body) of a streamed call, for chat messages or a raw prompt (exactly one of them)."""
    if (messages is None) == (prompt is None):
        raise ValueError("stream() takes either messages or prompt=")
    if prompt is None:
        return "llm.chat", chat_body(messages, {**options, "stream": True})
    return "llm.generate", generate_body(prompt, {**options, "stream": True})


def unpack(frame: bytes) -> dict:
    """A kernel frame's envelope, body untyped: the client reads its id first and drops late replies to calls it gave
    up on before typing them (they answer another syscall)."""
    return unpack_reply(frame)


def typed(message: dict, syscall: str) -> Envelope:
    """A token or result envelope answering syscall; KernelError for an error reply."""
    envelope = type_reply(message, syscall)
    if envelope.type == REPLY_ERROR:
        raise KernelError(envelope.body.code, envelope.body.message, envelope.body.retry_after_s)
    return envelope


def is_final(envelope: Envelope) -> bool:
    return envelope.type == REPLY_RESULT


def token_text(envelope: Envelope) -> str:
    """The text delta a stream yields for an envelope ("" for the result and for empty token frames)."""
    return "" if envelope.type == REPLY_RESULT else envelope.body.text


def disconnected() -> KernelError:
    return KernelError(
        ClientCode.DISCONNECTED, "the connection to the kernel dropped (it stopped or restarted): the call is lost"
    )


def unauthorized(address: str) -> KernelError:
    return KernelError(ClientCode.UNAUTHORIZED, f"the kernel at {address} refused this client's credentials")


def timed_out(syscall: str, timeout: float) -> KernelTimeout:
    return KernelTimeout(f"{syscall} got no reply within {timeout} s")


def hello_timed_out(address: str) -> KernelUnavailable:
    return KernelUnavailable(
        f"no kernel answered at {address} within {HELLO_TIMEOUT_S:.0f} s; start one with `aiosd --address {address}`"
    )


def over_limit(address: str) -> KernelError:
    return KernelError(
        ErrorCode.BUSY,
        f"the kernel at {address} dropped the connection before its hello: it holds as many "
        "connections of this user as it allows (or is near its descriptor limit); retry later",
    )


def hello_dropped(address: str) -> KernelError:
    """What a hello whose connection dropped fails with: KernelUnavailable if nobody listens any more, else the kernel
    dropped this connection, as it does over its connection limits."""
    check_listening(address)
    return over_limit(address)


def drop_error(events: list[int], address: str) -> KernelError | None:
    """The error a pending call fails with for these socket monitor events, None if they do not end it. On ipc://
    there are no credentials to refuse: a handshake cut short is the kernel dropping a connection over its limits."""
    if any(event & zmq.EVENT_HANDSHAKE_FAILED_AUTH for event in events) or (
        ipc_path(address) is None and any(event & HANDSHAKE_FAILED for event in events)
    ):
        return unauthorized(address)
    if any(event & HANDSHAKE_FAILED for event in events):
        return over_limit(address)
    if zmq.EVENT_DISCONNECTED in events:
        return disconnected()
    return None


def check_listening(address: str) -> None:
    """KernelUnavailable at once when no kernel listens on an ipc:// address (ZeroMQ itself would wait forever)."""
    path = ipc_path(address)
    if path is None:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as error:
        why = "no socket file" if error.errno == errno.ENOENT else "nobody listens on it"
        raise KernelUnavailable(
            f"no kernel is running at {address} ({why}); start one with `aiosd &`"
            + (f" or `aiosd --address {address}`" if address != default_address() else "")
        ) from None
    finally:
        probe.close()


def release(context: zmq.Context, socket: zmq.Socket, monitor: zmq.Socket | None) -> None:
    """Close a client's sockets (linger 0: nothing queued is worth waiting for) and then its context. Run at most once,
    by close() or by the finalizer of a connection dropped unclosed, on whatever thread collects it: each step is
    guarded, so a socket already closed, or an event loop gone, cannot stop the context from terminating."""
    with contextlib.suppress(zmq.ZMQError, ValueError):  # ValueError: the monitor was never enabled
        socket.disable_monitor()
    for each in (monitor, socket):
        if each is not None:
            with contextlib.suppress(Exception):  # an asyncio socket whose loop is closed still closes its handle
                each.close(linger=0)
    context.term()
