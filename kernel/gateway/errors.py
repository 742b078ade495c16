"""HTTP errors with OpenAI-shaped bodies, and the kernel's error codes mapped onto them.

Every failure the gateway answers is an APIError: a real HTTP status and the body OpenAI clients parse,
{"error": {"message", "type", "param", "code"}}. Kernel errors (sdk.KernelError, codes from ipc/errors.py and the
SDK's own) map by code: a malformed call is 400, an agent over its limits (busy, quota) 429, a prompt too long for
the context 413, a kernel that is not there 503. The kernel reports "too long for the context" as engine_error with
its message (kernel/daemon/preprocess.py); that message is the only way to tell it from an engine failure.
"""

from __future__ import annotations

import math

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from sdk.errors import KernelError


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        retry_after_s: float | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.retry_after_s = retry_after_s  # seconds the kernel asked the caller to wait, None when it did not say

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers())

    def headers(self) -> dict[str, str] | None:
        """Retry-After in whole seconds, rounded up, when the kernel said when to retry; else 1 s for a 429 or 503."""
        if self.retry_after_s is not None and math.isfinite(self.retry_after_s):
            return {"retry-after": str(max(0, math.ceil(self.retry_after_s)))}
        return {"retry-after": "1"} if self.status in (429, 503) else None


def bad_request(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, "invalid_request_error", "invalid_request", param)


# kernel/SDK error code → (HTTP status, OpenAI error type, OpenAI error code)
_BY_CODE = {
    "bad_request": (400, "invalid_request_error", "invalid_request"),
    "bad_frame": (400, "invalid_request_error", "invalid_request"),
    "unknown_type": (400, "invalid_request_error", "invalid_request"),
    "duplicate_id": (400, "invalid_request_error", "invalid_request"),
    "too_large": (413, "invalid_request_error", "context_length_exceeded"),
    "permission_denied": (403, "permission_error", "permission_denied"),
    "not_found": (404, "invalid_request_error", "not_found"),
    "busy": (429, "rate_limit_error", "rate_limit_exceeded"),
    "quota_exceeded": (429, "rate_limit_error", "quota_exceeded"),
    "unavailable": (503, "server_error", "kernel_unavailable"),
    "disconnected": (503, "server_error", "kernel_unavailable"),
    "shutdown": (503, "server_error", "kernel_unavailable"),
    "hello_required": (503, "server_error", "kernel_unavailable"),
    "unauthorized": (503, "server_error", "kernel_unavailable"),
    "killed": (503, "server_error", "agent_killed"),
    "cancelled": (503, "server_error", "cancelled"),
    "timeout": (504, "server_error", "timeout"),
    "engine_error": (500, "server_error", "engine_error"),
    "internal": (500, "server_error", "internal_error"),
}
_CONTEXT_MESSAGES = ("tokens a sequence may hold", "-token context")  # kernel/daemon/preprocess.py's wording


def from_kernel(error: KernelError) -> APIError:
    if error.code == "engine_error" and any(m in error.message for m in _CONTEXT_MESSAGES):
        return APIError(413, error.message, "invalid_request_error", "context_length_exceeded")
    status, type_, code = _BY_CODE.get(error.code, (500, "server_error", error.code))
    return APIError(status, error.message, type_, code, retry_after_s=error.retry_after_s)


def install(app: FastAPI) -> None:
    """Answer every error in OpenAI's shape: ours, the kernel's, unknown routes and methods, and bugs (500, logged by
    the server)."""

    @app.exception_handler(APIError)
    async def api_error(_request: Request, error: APIError) -> JSONResponse:
        return error.response()

    @app.exception_handler(KernelError)
    async def kernel_error(_request: Request, error: KernelError) -> JSONResponse:
        return from_kernel(error).response()

    @app.exception_handler(ClientDisconnect)
    async def client_left(_request: Request, _error: ClientDisconnect) -> JSONResponse:
        # the client left (or was cut at its body's deadline, kernel/gateway/connections.py) mid-body: nobody reads this
        return APIError(400, "the client disconnected before its request body ended").response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code)
        return APIError(error.status_code, str(error.detail), "invalid_request_error", code).response()
