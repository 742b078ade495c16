"""The dashboard's HTTP routes, under /ui:

    GET  /ui                       the page (index.html; with keys and no operator yet: 303 to /ui/login)
    GET  /ui/static/{name}         its script and style sheet (a fixed set, read from the package once)
    GET  /ui/login, POST /ui/login the one-time key form (keys mode): a valid operator key gets the session cookie
    POST /ui/logout                forget the session
    GET  /ui/api/state             the latest snapshot frame as JSON: {version, at, error, top}
    GET  /ui/api/events            the same frames as server-sent events ("snapshot"), one per refresh interval
    POST /ui/api/approvals/{id}    {"allow": true|false}: decide a held tool call through the kernel's tool.approve

Every snapshot comes from one SnapshotFeed (kernel/gateway/ui/feed.py): one kernel.top call per interval whatever
the number of pages, streams and pollers. Who may call each route: kernel/gateway/ui/access.py. Bodies are bounded
(a login form at 4 KiB, a decision at 1 KiB) and validated; an approval id is 1..64 of [A-Za-z0-9_-]. The page gets
a Content-Security-Policy allowing only its own script, style and connections, so text from agents (names, tool
arguments), which the script sets as text and never as markup, could not run even if it were markup.
"""

from __future__ import annotations

import json
import math
import re
from importlib import resources
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from kernel.gateway.agents import AgentPool
from kernel.gateway.errors import APIError, bad_request
from kernel.gateway.ui.access import Access, Viewer
from kernel.gateway.ui.feed import Frame, SnapshotFeed
from kernel.gateway.ui.operator import OperatorLink
from kernel.gateway.ui.sessions import COOKIE

PREFIX = "/ui"
STATIC = {  # name → media type: the only files served
    "app.js": "text/javascript; charset=utf-8",
    "plots.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",  # no-referrer would make the login form post "Origin: null"
    "cache-control": "no-store",
}
MAX_LOGIN_BYTES = 4096
MAX_DECISION_BYTES = 1024
APPROVAL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
LOGIN_FAILED = "<p class=error>That key is unknown, or it does not grant proc.view.</p>"


def router(access: Access, feed: SnapshotFeed, link: OperatorLink, pool: AgentPool) -> APIRouter:
    files = {name: _read(name) for name in (*STATIC, "index.html", "login.html")}
    routes = APIRouter(prefix=PREFIX)
    encoded: list = [None, b""]  # the last frame and its JSON: encoded once however many streams send it

    def payload(frame: Frame) -> bytes:
        if encoded[0] is not frame:
            encoded[:] = [frame, _payload(frame)]
        return encoded[1]

    def page(name: str, status: int = 200, message: str = "") -> Response:
        body = files[name].replace(b"<!--message-->", message.encode())
        return Response(body, status, headers=PAGE_HEADERS, media_type="text/html; charset=utf-8")

    @routes.get("")
    async def index(request: Request) -> Response:
        if access.viewer(request) is None:
            return RedirectResponse(f"{PREFIX}/login", 303)
        return page("index.html")

    @routes.get("/static/{name}")
    async def static(request: Request, name: str) -> Response:
        if name not in STATIC:
            raise APIError(404, f"no dashboard file {name[:40]!r}", code="not_found")
        return Response(files[name], media_type=STATIC[name], headers={"x-content-type-options": "nosniff"})

    @routes.get("/login")
    async def login_form(request: Request) -> Response:
        if access.keyring is None:
            return RedirectResponse(PREFIX, 303)
        return page("login.html")

    @routes.post("/login")
    async def login(request: Request) -> Response:
        if access.keyring is None:
            return RedirectResponse(PREFIX, 303)
        access.check_same_origin(request, json_body=False)
        form = parse_qs((await _bounded_body(request, MAX_LOGIN_BYTES)).decode("utf-8", "replace"))
        entry_key = (form.get("key") or [""])[0].strip()
        if access.login_key(entry_key) is None:
            return page("login.html", 401, LOGIN_FAILED)
        response = RedirectResponse(PREFIX, 303)
        response.set_cookie(
            COOKIE,
            access.sessions.open(entry_key),
            max_age=int(access.sessions.ttl_s),
            path=PREFIX,
            httponly=True,
            samesite="strict",
        )
        return response

    @routes.post("/logout")
    async def logout(request: Request) -> Response:
        access.check_same_origin(request, json_body=False)
        access.sessions.close(request.cookies.get(COOKIE))
        response = RedirectResponse(f"{PREFIX}/login", 303)
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    @routes.get("/api/state")
    async def state(request: Request) -> Response:
        access.require(request)
        return Response(payload(await feed.current()), media_type="application/json", headers=PAGE_HEADERS)

    @routes.get("/api/events")
    async def events(request: Request) -> StreamingResponse:
        access.require(request)

        async def stream():
            yield f"retry: {int(feed.interval_s * 1000)}\n\n".encode()
            async for frame in feed.updates():
                yield b"event: snapshot\nid: %d\ndata: %s\n\n" % (frame.version, payload(frame))

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    @routes.post("/api/approvals/{approval_id}")
    async def decide(request: Request, approval_id: str) -> JSONResponse:
        viewer = access.require(request)
        access.check_same_origin(request, json_body=True)
        if not APPROVAL_ID.fullmatch(approval_id):
            raise bad_request("an approval id is 1..64 letters, digits, '_' or '-'", "approval_id")
        allow = _decision(await _bounded_body(request, MAX_DECISION_BYTES))
        await _approve(viewer, approval_id, allow, link, pool)
        feed.invalidate()  # the next frame shows the call gone from the waiting list
        return JSONResponse({"approval_id": approval_id, "decision": "approved" if allow else "denied"})

    return routes


async def _approve(viewer: Viewer, approval_id: str, allow: bool, link: OperatorLink, pool: AgentPool) -> None:
    """Through the key's own agent (the kernel checks its tool.approve and audits it by name), or keyless through
    the dashboard's operator connection."""
    if viewer.keyless:
        await link.approve(approval_id, allow)
        return
    kernel = await pool.kernel(viewer.entry)
    await kernel.tools.approve(approval_id, allow=allow)


def _decision(body: bytes) -> bool:
    try:
        decision = json.loads(body)
    except ValueError:
        raise bad_request('the body must be JSON: {"allow": true or false}') from None
    if not isinstance(decision, dict) or set(decision) != {"allow"} or not isinstance(decision["allow"], bool):
        raise bad_request('the body must be exactly {"allow": true} or {"allow": false}', "allow")
    return decision["allow"]


async def _bounded_body(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise APIError(413, f"request body over {limit} bytes", code="too_large")
        chunks.append(part)
    return b"".join(chunks)


def _payload(frame: Frame) -> bytes:
    """The frame as compact JSON (non-finite floats as null: JavaScript's JSON.parse refuses NaN)."""
    return json.dumps(_finite(frame.as_json()), separators=(",", ":"), default=str).encode()


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _read(name: str) -> bytes:
    return (resources.files("kernel.gateway.ui") / "static" / name).read_bytes()
