"""Error codes carried by every error reply, and the exception that raises one inside the kernel."""
from __future__ import annotations

import enum


class ErrorCode(str, enum.Enum):
    BAD_FRAME = "bad_frame"            # not a msgpack map, or not a single frame
    BAD_VERSION = "bad_version"        # protocol version the kernel does not speak
    UNKNOWN_TYPE = "unknown_type"      # no such syscall
    BAD_REQUEST = "bad_request"        # missing field, wrong field type, unknown field, bad value
    TOO_LARGE = "too_large"            # frame over the kernel's size limit
    HELLO_REQUIRED = "hello_required"  # syscall before hello
    DUPLICATE_ID = "duplicate_id"      # request id already in flight on this connection
    NOT_FOUND = "not_found"            # unknown agent or request id
    ENGINE = "engine_error"            # the engine refused the request (prompt too long, bad sampling values)
    CANCELLED = "cancelled"            # llm.cancel, or the client gave up waiting
    KILLED = "killed"                  # proc.kill on the agent, or its process died
    SHUTDOWN = "shutdown"              # the kernel is stopping
    INTERNAL = "internal"              # a kernel bug: logged, the kernel keeps serving


class ProtocolError(Exception):
    """A request the kernel answers with an error reply instead of a result."""

    def __init__(self, code: ErrorCode, message: str, req_id: int | str | None = None):
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.req_id = req_id      # the request to answer, when the frame got far enough to name it
