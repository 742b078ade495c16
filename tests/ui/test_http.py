"""The dashboard's HTTP surface against the real gateways: who may see /ui and its API (operator keys by Bearer or
the login cookie with keys; loopback programs only without), what a cookie-carrying request from another site is
refused, what hostile input to the approval route gets (a clear 4xx, never a 5xx), and one kernel call per interval
however many readers."""

import asyncio
import json
import time
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel.gateway import keys
from kernel.gateway.app import create_app
from sdk import connect

UI_INTERVAL_S = 0.25


@pytest.fixture(scope="module")
def keyed(stack):
    with httpx.Client(base_url=stack.base(stack.keyed), timeout=120.0) as client:
        yield client


@pytest.fixture(scope="module")
def keyless(stack):
    with httpx.Client(base_url=stack.base(stack.keyless), timeout=120.0) as client:
        yield client


def bearer(key: str) -> dict:
    return {"authorization": f"Bearer {key}"}


def test_with_keys_the_dashboard_needs_an_operator_key(stack, keyed):
    for path in ("/ui/api/state", "/ui/api/events"):
        assert keyed.get(path).status_code == 401
        assert keyed.get(path, headers=bearer("sk-aios-not-a-key")).status_code == 401
        refused = keyed.get(path, headers=bearer(stack.keys["plain"]))
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "not_an_operator"
    page = keyed.get("/ui")
    assert page.status_code == 303 and page.headers["location"] == "/ui/login"
    assert keyed.post("/ui/api/approvals/p1-1", json={"allow": True}).status_code == 401
    assert keyed.get("/v1/models").status_code == 401  # the rest of the gateway still needs its key


def test_an_operator_key_sees_every_agent(stack, keyed):
    with connect(stack.kernel.address, name="watched-agent") as agent:
        deadline = time.monotonic() + 120
        while True:
            frame = keyed.get("/ui/api/state", headers=bearer(stack.keys["viewer"])).json()
            listed = {a["agent_id"]: a["name"] for a in (frame["top"] or {}).get("agents", [])}
            if listed.get(agent.agent_id) == "watched-agent" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert listed.get(agent.agent_id) == "watched-agent"
        assert frame["error"] is None and frame["top"]["model"] == agent.model


def test_the_login_form_gives_a_session_cookie_that_logout_and_revocation_end(stack, keyed):
    refused = keyed.post("/ui/login", data={"key": stack.keys["plain"]})
    assert refused.status_code == 401 and "does not grant proc.view" in refused.text
    operator = keys.add(stack.keys_path, "ops-2", grants=["proc.view"])
    for log_out in ("logout", "revoke"):
        if log_out == "revoke":
            operator = keys.add(stack.keys_path, "ops-3", grants=["proc.view"])
        with httpx.Client(base_url=str(keyed.base_url), timeout=120.0) as browser:
            opened = browser.post("/ui/login", data={"key": operator})
            assert opened.status_code == 303 and opened.headers["location"] == "/ui"
            cookie = opened.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
            assert operator not in opened.headers["set-cookie"]
            assert browser.get("/ui").status_code == 200
            assert browser.get("/ui/api/state").status_code == 200
            if log_out == "logout":
                session = dict(browser.cookies)
                assert browser.post("/ui/logout").status_code == 303
                browser.cookies.update(session)  # a session copied before logout is dead too
            else:
                entry = next(e for e in keys.load(stack.keys_path) if e.agent == "ops-3")
                assert keys.revoke(stack.keys_path, entry.id)
            assert browser.get("/ui/api/state").status_code == 401


def test_cookie_requests_another_site_could_forge_are_refused(stack, keyed):
    with httpx.Client(base_url=str(keyed.base_url), timeout=120.0) as browser:
        assert browser.post("/ui/login", data={"key": stack.keys["operator"]}).status_code == 303
        plain_text = browser.post(
            "/ui/api/approvals/p1-1", content=b'{"allow": true}', headers={"content-type": "text/plain"}
        )
        assert plain_text.status_code == 415
        foreign = browser.post(
            "/ui/api/approvals/p1-1", json={"allow": True}, headers={"origin": "http://evil.example"}
        )
        assert foreign.status_code == 403 and foreign.json()["error"]["code"] == "origin_not_allowed"
        forged_login = browser.post(
            "/ui/login", data={"key": stack.keys["operator"]}, headers={"origin": "http://evil.example"}
        )
        assert forged_login.status_code == 403


def test_without_keys_only_loopback_programs_are_served(keyless):
    assert keyless.get("/ui").status_code == 200
    assert keyless.get("/ui/api/state").status_code == 200
    assert keyless.get("/ui/api/state", headers={"host": "evil.example"}).status_code == 403
    assert keyless.get("/ui/api/state", headers={"origin": "http://evil.example"}).status_code == 403
    assert keyless.post("/ui/api/approvals/p1-1", content=b'{"allow":true}').status_code == 415


@pytest.mark.parametrize(("client", "status"), [(("10.0.0.5", 40000), 403), (("127.0.0.1", 40000), 200)])
def test_without_keys_a_non_loopback_peer_is_refused(client, status):
    async def fetch():
        app = create_app("ipc:///nonexistent/aios/kernel.sock", None)
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
            return await http.get("/ui")

    response = asyncio.run(fetch())
    assert response.status_code == status
    if status == 403:
        assert response.json()["error"]["code"] == "client_not_allowed"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    approval_id=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=80).filter(
        lambda s: s not in (".", "..")
    ),
    body=st.one_of(
        st.binary(max_size=64),
        st.builds(lambda v: json.dumps({"allow": v}).encode(), st.one_of(st.booleans(), st.integers(), st.none())),
        st.just(b"x" * 2048),
    ),
)
def test_hostile_approval_input_gets_a_clear_error(stack, keyed, approval_id, body):
    response = keyed.post(
        "/ui/api/approvals/" + quote(approval_id, safe=""),
        content=body,
        headers={**bearer(stack.keys["operator"]), "content-type": "application/json"},
    )
    if response.status_code == 307:  # an id ending in "/" (sent as %2F): the framework's trailing-slash redirect
        assert approval_id.endswith("/")
        return
    assert response.status_code in (400, 404, 405, 413), response.text
    assert response.json()["error"]["message"]


def test_readers_share_one_kernel_call_per_interval(keyless):
    """Versions count kernel.top calls: however many readers and streams, they grow at most once per interval."""

    async def watch(seconds: float) -> tuple[int, int, float]:
        async with httpx.AsyncClient(base_url=str(keyless.base_url), timeout=120.0) as http:
            started = time.monotonic()
            first = (await http.get("/ui/api/state")).json()["version"]

            async def stream():
                async with http.stream("GET", "/ui/api/events") as events:
                    async for _line in events.aiter_lines():
                        if time.monotonic() - started > seconds:
                            return

            async def poll():
                while time.monotonic() - started < seconds:
                    await http.get("/ui/api/state")

            await asyncio.gather(*(stream() for _ in range(4)), *(poll() for _ in range(8)))
            last = (await http.get("/ui/api/state")).json()["version"]
            return first, last, time.monotonic() - started

    first, last, elapsed = asyncio.run(watch(2.0))
    assert last > first  # the frames did move on
    assert last - first <= elapsed / UI_INTERVAL_S + 2


def test_the_gateway_serves_metrics_to_operators(stack, keyed):
    assert keyed.get("/metrics", headers=bearer(stack.keys["plain"])).status_code == 403
    scraped = keyed.get("/metrics", headers=bearer(stack.keys["viewer"]))
    assert scraped.status_code == 200 and "aios_agents" in scraped.text
