"""HTTP errors with OpenAI-shaped bodies, and the kernel's error codes mapped onto them.

Every failure the gateway answers is an APIError: a real HTTP status and the body OpenAI clients parse,
{"error": {"message", "type", "param", "code"}}. Kernel errors (sdk.KernelError, codes from ipc/errors.py and the
SDK's own) map by code, never by message text: a malformed call is 400, a prompt (with its max_tokens) too long for
the context 400 context_length_exceeded (what OpenAI answers and its clients look for), an agent over its limits
(busy, quota) 429, a kernel that is not there 503. A code the gateway does not know (a kernel newer than it) is 500
with that code.
"""

from __future__ import annotations

import math

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ipc.errors import ClientCode, ErrorCode, parse_code
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


_INVALID = (400, "invalid_request_error", "invalid_request")
_GONE = (503, "server_error", "kernel_unavailable")

# every code of the one vocabulary (ipc/errors.py) → (HTTP status, OpenAI error type, OpenAI error code); only a
# kernel bug (internal) and an engine failure are 500
BY_CODE: dict[ErrorCode | ClientCode, tuple[int, str, str]] = {
    ErrorCode.BAD_REQUEST: _INVALID,
    ErrorCode.BAD_FRAME: _INVALID,
    ErrorCode.UNKNOWN_TYPE: _INVALID,
    ErrorCode.DUPLICATE_ID: _INVALID,
    ErrorCode.BAD_VERSION: (502, "server_error", "protocol_mismatch"),  # the gateway and aiosd disagree
    ErrorCode.CONTEXT_LENGTH: (400, "invalid_request_error", "context_length_exceeded"),
    ErrorCode.TOO_LARGE: (413, "invalid_request_error", "too_large"),
    ErrorCode.DENIED: (403, "permission_error", "permission_denied"),
    ErrorCode.NOT_FOUND: (404, "invalid_request_error", "not_found"),
    ErrorCode.BUSY: (429, "rate_limit_error", "rate_limit_exceeded"),
    ErrorCode.QUOTA: (429, "rate_limit_error", "quota_exceeded"),
    ErrorCode.SHUTDOWN: _GONE,
    ErrorCode.HELLO_REQUIRED: _GONE,
    ErrorCode.KILLED: (503, "server_error", "agent_killed"),
    ErrorCode.CANCELLED: (503, "server_error", "cancelled"),
    ErrorCode.ENGINE: (500, "server_error", "engine_error"),
    ErrorCode.INTERNAL: (500, "server_error", "internal_error"),
    ClientCode.UNAVAILABLE: _GONE,
    ClientCode.DISCONNECTED: _GONE,
    ClientCode.UNAUTHORIZED: _GONE,
    ClientCode.TIMEOUT: (504, "server_error", "timeout"),
}


def from_kernel(error: KernelError) -> APIError:
    code = parse_code(error.code)
    status, type_, openai_code = BY_CODE.get(code, (500, "server_error", str(code)))
    return APIError(status, error.message, type_, openai_code, retry_after_s=error.retry_after_s)


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
