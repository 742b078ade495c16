"""Who may use the dashboard (/ui), decided for each request.

With a keys file: a request carries an operator key, as a Bearer token (scripts, curl) or through the session cookie a
browser got by posting the key to /ui/login (kernel/gateway/ui/sessions.py). An operator key is one whose grants hold
proc.view (`aios gateway keys add ops --grant proc.view --grant tool.approve`): the dashboard shows every agent, as
proc.list does to a proc.view holder. Deciding approvals needs tool.approve too, which the kernel checks and audits
itself: the decision is made through that key's own agent. Without a key: 401; a key without proc.view: 403.
Without a keys file the guard (kernel/gateway/guard.py) has already admitted loopback programs only: they are the
operator, as the `aios` CLI of the same machine would be.

Requests a cookie authenticates could be forged by another site's page (CSRF): the session cookie is SameSite=Strict
and HttpOnly, and every state-changing request must also carry Content-Type: application/json (a cross-site page
cannot send that without a CORS preflight, which the gateway never approves) and, when it has an Origin, the
gateway's own.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from kernel.access.capabilities import Capability
from kernel.gateway.errors import APIError
from kernel.gateway.guard import KEY_STATE, json_content_type
from kernel.gateway.keys import KeyEntry, KeyRing
from kernel.gateway.ui.sessions import COOKIE, Sessions

OPERATOR_GRANT = Capability.PROC_VIEW.value


@dataclass(frozen=True)
class Viewer:
    entry: KeyEntry
    keyless: bool  # no keys file: a loopback program, deciding through the dashboard's operator connection


def is_operator(entry: KeyEntry) -> bool:
    return OPERATOR_GRANT in entry.grants


class Access:
    def __init__(self, keyring: KeyRing | None, sessions: Sessions):
        self.keyring, self.sessions = keyring, sessions

    def viewer(self, request: Request) -> Viewer | None:
        """The operator behind request, None if it shows none; APIError(403) for a valid key that is no operator's."""
        if self.keyring is None:
            return Viewer(request.scope["state"][KEY_STATE], keyless=True)
        key = self._bearer(request) or self.sessions.key(request.cookies.get(COOKIE))
        entry = self.keyring.lookup(key) if key else None
        if entry is None:
            return None
        if not is_operator(entry):
            raise APIError(
                403,
                f"the dashboard needs an operator key: one granting {OPERATOR_GRANT}",
                "permission_error",
                "not_an_operator",
            )
        return Viewer(entry, keyless=False)

    def require(self, request: Request) -> Viewer:
        viewer = self.viewer(request)
        if viewer is None:
            raise APIError(
                401,
                "the dashboard needs an operator key: a Bearer token, or log in at /ui/login",
                "authentication_error",
                "invalid_api_key",
            )
        return viewer

    def login_key(self, key: str) -> KeyEntry | None:
        """The operator entry of a key posted to the login form; None if it is unknown or no operator's."""
        entry = self.keyring.lookup(key) if self.keyring is not None and key else None
        return entry if entry is not None and is_operator(entry) else None

    @staticmethod
    def check_same_origin(request: Request, *, json_body: bool) -> None:
        """Refuse what another site's page could send with the operator's cookie (see the module's contract)."""
        if json_body and not json_content_type(request.headers.getlist("content-type")):
            raise APIError(415, "the dashboard takes Content-Type: application/json", code="unsupported_media_type")
        origins = request.headers.getlist("origin")
        host = request.headers.get("host", "")
        if len(origins) > 1 or (origins and origins[0] not in (f"http://{host}", f"https://{host}")):
            raise APIError(403, "a request from another site's page", "permission_error", "origin_not_allowed")

    @staticmethod
    def _bearer(request: Request) -> str | None:
        authorization = request.headers.getlist("authorization")
        if len(authorization) != 1:
            return None
        scheme, _, key = authorization[0].partition(" ")
        return key.strip() if scheme.lower() == "bearer" and key.strip() else None
