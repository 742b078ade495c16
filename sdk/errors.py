"""What the SDK raises: the kernel's error replies, and the conditions the SDK finds itself, each carrying its code.

Codes come from one vocabulary (ipc/errors.py): ErrorCode for what the kernel answered, ClientCode for what the SDK
concluded without a reply (timeout, unavailable, disconnected, unauthorized). `.code` is the enum member (a str, so
`error.code == "busy"` holds too); a code this SDK does not know (a newer kernel) stays the string it was sent as.
"""

from __future__ import annotations

from ipc.errors import ClientCode, Code, ErrorCode, parse_code


class KernelError(Exception):
    """The kernel answered with an error, or the SDK could not get an answer. `.code` is an ErrorCode or ClientCode,
    e.g. ErrorCode.BAD_REQUEST, ClientCode.DISCONNECTED. `.retry_after_s` is how long the kernel asks to wait before
    retrying (seconds), None when it did not say."""

    def __init__(self, code: Code | str, message: str, retry_after_s: float | None = None):
        self.code = parse_code(code)
        super().__init__(f"[{self.code}] {message}")
        self.message = message
        self.retry_after_s = retry_after_s


class KernelTimeout(KernelError, TimeoutError):
    """No final reply within the call's timeout (the call was cancelled in the kernel)."""

    def __init__(self, message: str):
        super().__init__(ClientCode.TIMEOUT, message)


class KernelUnavailable(KernelError, ConnectionError):
    """No kernel answers at the address: none is running there, or it does not answer hello."""

    def __init__(self, message: str):
        super().__init__(ClientCode.UNAVAILABLE, message)


__all__ = ["ClientCode", "ErrorCode", "KernelError", "KernelTimeout", "KernelUnavailable"]
