"""The refusals of the storage manager, as the ProtocolErrors the kernel turns into error replies.

Contract: every refusal a caller can cause (bad path, missing file, payload too large, over quota, manager closed)
is raised as `ipc.errors.ProtocolError` with one of the codes below, and its message says which rule was broken and,
for limits, what the limit is. Anything else that escapes the manager (an OSError such as EIO) is a failing disk, not
a refusal, and the caller answers it as `internal`.

QUOTA is ErrorCode.QUOTA ("quota_exceeded") once the protocol has it, ErrorCode.BUSY until then; it is looked up when
an error is made, not at import, so whichever ipc/errors.py is loaded decides.
"""

from __future__ import annotations

from ipc.errors import ErrorCode, ProtocolError


def quota_code() -> ErrorCode:
    return ErrorCode.QUOTA


def bad_request(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_REQUEST, message)


def not_found(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.NOT_FOUND, message)


def too_large(size: int, limit: int) -> ProtocolError:
    return ProtocolError(ErrorCode.TOO_LARGE, f"file of {size} bytes is over the limit of {limit} bytes per file")


def over_quota(message: str) -> ProtocolError:
    return ProtocolError(quota_code(), message)


def closed() -> ProtocolError:
    return ProtocolError(ErrorCode.SHUTDOWN, "the storage manager is closed")
