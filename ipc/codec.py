"""Frames to typed messages and back: msgpack only, size-checked, version-checked, schema-validated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from ipc.errors import ErrorBody, ErrorCode, ProtocolError, check_retry_after
from ipc.messages import (
    MAX_ID_CHARS,
    NOTIFICATIONS,
    PROTOCOL_VERSION,
    REPLY_ERROR,
    REPLY_RESULT,
    REPLY_TOKEN,
    Token,
)
from ipc.schema import from_wire, to_wire
from ipc.syscalls import SYSCALLS

DEFAULT_MAX_FRAME_BYTES = 4 << 20  # a 4 MiB prompt is ~1M tokens: far past any context window


@dataclass(frozen=True)
class Envelope:
    """A decoded frame: who it answers or asks (req_id), what it is (type), and its typed body."""

    req_id: int | str | None
    type: str
    body: Any


def encode(msg_type: str, req_id: int | str | None, body: Any) -> bytes:
    return msgpack.packb(
        {"v": PROTOCOL_VERSION, "id": req_id, "type": msg_type, "body": to_wire(body)}, use_bin_type=True
    )


def encode_error(req_id: int | str | None, code: ErrorCode, message: str, retry_after_s: float | None = None) -> bytes:
    """An error reply; retry_after_s (seconds) goes on the wire only when given, so a reply without it is the
    two-field body every client already reads."""
    body = {"code": code.value, "message": message}
    retry_after_s = check_retry_after(retry_after_s)
    if retry_after_s is not None:
        body["retry_after_s"] = retry_after_s
    return msgpack.packb({"v": PROTOCOL_VERSION, "id": req_id, "type": REPLY_ERROR, "body": body}, use_bin_type=True)


def encode_protocol_error(error: ProtocolError) -> bytes:
    """The error reply a ProtocolError stands for, answering the request it names (if any)."""
    return encode_error(error.req_id, error.code, error.message, error.retry_after_s)


def decode_request(frame: bytes, max_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Envelope:
    """A syscall or notification from an agent; ProtocolError (with req_id once known) on anything malformed."""
    if len(frame) > max_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"frame of {len(frame)} bytes exceeds the limit of {max_bytes}")
    envelope = _unpack_envelope(frame)
    req_id, msg_type = envelope.get("id"), envelope["type"]
    if msg_type in NOTIFICATIONS:
        return Envelope(req_id, msg_type, from_wire(NOTIFICATIONS[msg_type], envelope["body"]))
    _check_req_id(req_id)
    if msg_type not in SYSCALLS:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"no syscall named {msg_type[:40]!r}", req_id)
    try:
        return Envelope(req_id, msg_type, from_wire(SYSCALLS[msg_type][0], envelope["body"]))
    except ProtocolError as error:
        error.req_id = req_id
        raise


def decode_reply(frame: bytes, syscall: str) -> Envelope:
    """A kernel frame answering `syscall`: body is a Token, an ErrorBody, or the syscall's result type."""
    return type_reply(unpack_reply(frame), syscall)


def unpack_reply(frame: bytes) -> dict:
    """A kernel frame's envelope, its body still untyped: a client reads the id first and drops late replies to calls
    it gave up on before typing them (they answer another syscall)."""
    return _unpack_envelope(frame)


def type_reply(envelope: dict, syscall: str) -> Envelope:
    msg_type = envelope["type"]
    body_type = {REPLY_TOKEN: Token, REPLY_ERROR: ErrorBody, REPLY_RESULT: SYSCALLS[syscall][1]}.get(msg_type)
    if body_type is None:
        raise ProtocolError(ErrorCode.BAD_FRAME, f"unexpected reply type {str(msg_type)[:40]!r}")
    return Envelope(envelope.get("id"), msg_type, from_wire(body_type, envelope["body"]))


def _unpack_envelope(frame: bytes) -> dict:
    try:
        message = msgpack.unpackb(frame, raw=False, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException) as error:  # garbage bytes, bad UTF-8, trailing data
        raise ProtocolError(ErrorCode.BAD_FRAME, f"not a msgpack frame: {error}") from None
    if not isinstance(message, dict):
        raise ProtocolError(ErrorCode.BAD_FRAME, f"frame must be a msgpack map, got {type(message).__name__}")
    req_id = message.get("id")
    if not _valid_req_id(req_id):
        req_id = None
    if message.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.BAD_VERSION,
            f"protocol version {str(message.get('v'))[:20]!r} unsupported, the kernel speaks {PROTOCOL_VERSION}",
            req_id,
        )
    missing = [key for key in ("type", "body") if key not in message]
    extra = [key for key in message if key not in ("v", "id", "type", "body")]
    if missing or extra or not isinstance(message["type"], str):
        detail = (
            f"missing {missing[0]!r}"
            if missing
            else f"unknown key {str(extra[0])[:40]!r}"
            if extra
            else "type not a string"
        )
        raise ProtocolError(ErrorCode.BAD_FRAME, f"bad envelope: {detail}", req_id)
    return message


def _valid_req_id(req_id: Any) -> bool:
    if isinstance(req_id, bool):
        return False
    if isinstance(req_id, int):
        return 0 <= req_id < 1 << 63
    return isinstance(req_id, str) and 0 < len(req_id) <= MAX_ID_CHARS


def _check_req_id(req_id: Any) -> None:
    if not _valid_req_id(req_id):
        raise ProtocolError(
            ErrorCode.BAD_FRAME,
            f"request id must be a non-negative integer or a string of 1..{MAX_ID_CHARS} characters",
        )
