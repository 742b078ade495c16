"""What the SDK raises: the kernel's error replies, carrying their code."""

from __future__ import annotations


class KernelError(Exception):
    """The kernel answered with an error. `.code` is an ipc.errors.ErrorCode value, e.g. "bad_request", "killed".
    `.retry_after_s` is how long the kernel asks to wait before retrying (seconds), None when it did not say."""

    def __init__(self, code: str, message: str, retry_after_s: float | None = None):
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


class KernelTimeout(KernelError, TimeoutError):
    """No final reply within the call's timeout (the call was cancelled in the kernel)."""

    def __init__(self, message: str):
        super().__init__("timeout", message)


class KernelUnavailable(KernelError, ConnectionError):
    """No kernel answers at the address: none is running there, or it does not answer hello."""

    def __init__(self, message: str):
        super().__init__("unavailable", message)
