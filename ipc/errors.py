"""Error codes carried by every error reply, the wire body of that reply, and the exception that raises one inside
the kernel.

Error messages are cut to MAX_MESSAGE_CHARS where the exception is made, so no reply ever echoes a large hostile value
back (and so no caller has to remember to cut). An error may say when to retry (retry_after_s, seconds, finite and
non-negative): a kernel over a limit that knows when it frees says so; the SDK exposes it on KernelError and the
gateway turns it into a Retry-After header. A reply without it says nothing about when to retry.

One vocabulary: ErrorCode is what the kernel answers; ClientCode is what a client concludes with no kernel reply to
go by (no kernel, dropped connection, refused credentials, no reply in time). Their values never collide, so a code
(sdk.KernelError.code) names one condition whichever side saw it; parse_code reads one back from its string. Both
enums are str: a code compares equal to its value ("busy" == ErrorCode.BUSY) and prints as it.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

MAX_MESSAGE_CHARS = 300


class ErrorCode(str, enum.Enum):
    BAD_FRAME = "bad_frame"  # not a msgpack map, or not a single frame
    BAD_VERSION = "bad_version"  # protocol version the kernel does not speak
    UNKNOWN_TYPE = "unknown_type"  # no such syscall
    BAD_REQUEST = "bad_request"  # missing field, wrong field type, unknown field, value out of its bounds
    TOO_LARGE = "too_large"  # frame over the kernel's size limit, or a file over its space's per-file limit
    HELLO_REQUIRED = "hello_required"  # syscall before hello, or from a connection the kernel does not know
    DUPLICATE_ID = "duplicate_id"  # request id already in flight on this connection
    NOT_FOUND = "not_found"  # unknown agent or request id
    DENIED = "permission_denied"  # the caller lacks the capability (audited)
    BUSY = "busy"  # a per-agent limit or a kernel queue is full: retry later
    QUOTA = "quota_exceeded"  # a memory space or file space is full (entries, bytes, files)
    CONTEXT_LENGTH = "context_length_exceeded"  # prompt + max_tokens over the engine's context (OpenAI's code)
    ENGINE = "engine_error"  # the engine refused or failed the request (numeric failure, invalid sampling values)
    CANCELLED = "cancelled"  # llm.cancel, or the client gave up waiting, or stopped reading its replies
    KILLED = "killed"  # proc.kill on the agent, or its process died
    SHUTDOWN = "shutdown"  # the kernel is stopping
    INTERNAL = "internal"  # a kernel bug: logged, the kernel keeps serving

    def __str__(self) -> str:
        return self.value


class ClientCode(str, enum.Enum):
    """Conditions a client reports itself: never on the wire from the kernel."""

    TIMEOUT = "timeout"  # no final reply within the call's timeout (the client cancelled the call in the kernel)
    UNAVAILABLE = "unavailable"  # no kernel answers at the address (none running, or it does not answer hello)
    DISCONNECTED = "disconnected"  # the connection dropped or was closed with the call in flight: the call is lost
    UNAUTHORIZED = "unauthorized"  # the kernel refused this client's credentials (Curve handshake over tcp)

    def __str__(self) -> str:
        return self.value


Code = ErrorCode | ClientCode


def parse_code(value: str) -> Code | str:
    """The ErrorCode or ClientCode a string names; the string itself for a code this side does not know (a newer
    peer), so reading a reply never fails on its code."""
    if isinstance(value, (ErrorCode, ClientCode)):
        return value
    for enum_type in (ErrorCode, ClientCode):
        try:
            return enum_type(value)
        except ValueError:
            continue
    return value


@dataclass(frozen=True)
class ErrorBody:
    """The body of an error reply on the wire. code is an ErrorCode value (a string, so a client reads a code newer
    than itself instead of failing on it); retry_after_s is absent from the frame when None."""

    code: str
    message: str
    retry_after_s: float | None = None


class ProtocolError(Exception):
    """A request the kernel answers with an error reply instead of a result."""

    def __init__(
        self, code: ErrorCode, message: str, req_id: int | str | None = None, retry_after_s: float | None = None
    ):
        message = shorten(message)
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.req_id = req_id  # the request to answer, when the frame got far enough to name it
        self.retry_after_s = check_retry_after(retry_after_s)


def check_retry_after(seconds: float | None) -> float | None:
    """seconds as a float, or None; ValueError for a negative or non-finite delay (a kernel bug, not input)."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"retry_after_s must be a finite number of seconds >= 0, got {seconds!r}")
    return float(seconds)


def shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 15] + f"... ({len(text)} chars)"
