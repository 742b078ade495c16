"""A gateway without a keys file (one open agent, loopback only) serves local programs and nothing a web page can
send: a foreign Host (DNS rebinding), a foreign Origin, a body a cross-site form can post (text/plain). The rules
are written here again, independently of kernel/gateway/guard.py, and a hypothesis test checks over random Host, Origin,
method and Content-Type that every request outside them is refused and every one within them is served."""

import json

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sdk
from tests.gateway.raw_clients import connect, gateway, host_port, read_response, request, status

LOOPBACK_NAMES = ["localhost", "LocalHost", "127.0.0.1", "127.0.0.2", "127.255.1.9", "[::1]", "[0:0:0:0:0:0:0:1]"]
FOREIGN_NAMES = [
    "evil.example",
    "localhost.evil.example",
    "127.0.0.1.nip.io",
    "0.0.0.0",
    "10.0.0.1",
    "[::2]",
    "127.1",
    "2130706433",
    "0x7f.0.0.1",
    "[::ffff:127.0.0.1]",
    "localhost.",
    "",
    "[::1",
    "::1",
    "user@localhost",
]
JSON_TYPES = [
    "application/json",
    "Application/JSON",
    "application/json; charset=utf-8",
    "application/json;charset=UTF-8",
]
OTHER_TYPES = [
    "text/plain",
    "text/plain; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "application/json-patch+json",
    "application/jsonx",
    "json",
    "",
    "text/json",
]
REFUSED = {403, 415}


@pytest.fixture(scope="module")
def model(stack):
    with sdk.connect(stack.kernel.address, name="keyless-reference") as kernel:
        return kernel.model


@pytest.fixture(scope="module")
def keyless(stack, tmp_path_factory):
    with gateway(stack.kernel.address, None, tmp_path_factory.mktemp("keyless"), "keyless") as process:
        yield process


@pytest.fixture(scope="module")
def http(keyless):
    with httpx2.Client(base_url=keyless.url, timeout=120.0) as client:
        yield client


def completion(model: str) -> bytes:
    return json.dumps({"model": model, "prompt": "hi", "max_tokens": 1}).encode()


def test_a_local_program_is_served(http, model):
    assert http.get("/models").status_code == 200
    assert (
        http.post("/completions", content=completion(model), headers={"content-type": "application/json"}).json()[
            "usage"
        ]["completion_tokens"]
        == 1
    )


def test_a_foreign_host_is_refused(http, keyless):
    port = host_port(keyless.url)[1]
    for host in ["evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}", "127.0.0.1"]:
        response = http.get("/models", headers={"host": host})
        assert response.status_code == 403 and response.json()["error"]["code"] == "host_not_allowed", host


def test_a_foreign_origin_is_refused(http):
    for origin in ["http://evil.example", "https://localhost.evil.example", "null", "file://", "http://10.0.0.1"]:
        response = http.get("/models", headers={"origin": origin})
        assert response.status_code == 403 and response.json()["error"]["code"] == "origin_not_allowed", origin


def test_a_text_plain_post_is_refused_before_its_body_is_read(keyless, model):
    port = host_port(keyless.url)[1]
    sock = connect(keyless.url)
    try:
        # a cross-site form's post, its body never sent: the answer cannot have needed it
        sock.sendall(
            request(
                "POST",
                "/v1/completions",
                port,
                {"Content-Type": "text/plain", "Content-Length": str(len(completion(model)))},
            )
        )
        assert status(read_response(sock)) == 415
    finally:
        sock.close()


def expected_served(host: str, origin: str | None, method: str, content_type: str | None, port: int) -> bool:
    """The rules, written out: a loopback Host with this port, no Origin or a loopback http(s) one, and a JSON body
    for a POST."""
    host_ok = any(host == f"{name}:{port}" for name in LOOPBACK_NAMES)
    origin_ok = origin is None or any(
        origin in (f"{scheme}://{name}", f"{scheme}://{name}:8080")
        for scheme in ("http", "https")
        for name in LOOPBACK_NAMES
    )
    type_ok = method == "GET" or content_type in JSON_TYPES
    return host_ok and origin_ok and type_ok


@st.composite
def requests(draw, port: int):
    name = draw(st.sampled_from(LOOPBACK_NAMES + FOREIGN_NAMES))
    host = draw(st.sampled_from([f"{name}:{port}", f"{name}:{port + 1}", name, f"{name}:x", f"{name}:{port}/"]))
    origin = draw(
        st.none()
        | st.builds(
            lambda scheme, origin_name, tail: f"{scheme}{origin_name}{tail}",
            st.sampled_from(["http://", "https://", "ftp://", "", "http:/"]),
            st.sampled_from(LOOPBACK_NAMES + FOREIGN_NAMES),
            st.sampled_from(["", ":8080", "/", "/page", ":8080/x"]),
        )
        | st.just("null")
    )
    method = draw(st.sampled_from(["GET", "POST"]))
    content_type = draw(st.none() | st.sampled_from(JSON_TYPES + OTHER_TYPES))
    return host, origin, method, content_type


def test_no_request_outside_the_rules_is_served_and_none_within_them_refused(keyless, http, model):
    port = host_port(keyless.url)[1]
    seen = set()

    @settings(max_examples=200, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(requests(port))
    def check(drawn):
        host, origin, method, content_type = drawn
        headers = {"host": host}
        if origin is not None:
            headers["origin"] = origin
        if content_type is not None:
            headers["content-type"] = content_type
        if method == "GET":
            response = http.get("/models", headers=headers)
        else:
            response = http.post("/completions", content=completion(model), headers=headers)
        served = expected_served(host, origin, method, content_type, port)
        seen.add(served)
        if served:
            assert response.status_code == 200, (drawn, response.text[:300])
        else:
            assert response.status_code in REFUSED, (drawn, response.status_code, response.text[:300])

    check()
    assert seen == {True, False}  # both sides of the rules were tried
