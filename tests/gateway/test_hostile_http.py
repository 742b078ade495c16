"""Hostile HTTP clients against real gateway processes (raw sockets): bodies refused before they are read, deadlines
on headers and bodies, and connection caps that idle connections cannot use to starve anyone
(kernel/gateway/guard.py, kernel/gateway/connections.py). Each gateway here fronts the package's real kernel; loopback
source addresses (127.0.0.x) stand for distinct clients."""

import json
import threading

import pytest

import sdk
from tests.gateway.raw_clients import (
    closed_by_server,
    connect,
    gateway,
    host_port,
    read_response,
    request,
    rss_kib,
    status,
    still_open,
)

UPLOAD = 8 << 20


@pytest.fixture(scope="module")
def model(stack):
    with sdk.connect(stack.kernel.address, name="hostile-http-reference") as kernel:
        return kernel.model


@pytest.fixture(scope="module")
def plain(stack, tmp_path_factory):
    """Default limits."""
    with gateway(stack.kernel.address, stack.keys_path, tmp_path_factory.mktemp("plain"), "plain") as process:
        yield process


@pytest.fixture(scope="module", params=["httptools", "h11"])
def capped(request, stack, tmp_path_factory):
    """Small caps, deadlines far away (nothing here is closed for being slow)."""
    with gateway(
        stack.kernel.address,
        stack.keys_path,
        tmp_path_factory.mktemp("capped"),
        "capped",
        max_per_client=8,
        max_connections=32,
        header_timeout_s=600,
        body_timeout_s=600,
        http=request.param,
    ) as process:
        yield process


@pytest.fixture(scope="module", params=["httptools", "h11"])
def hasty(request, stack, tmp_path_factory):
    """One-second deadlines."""
    with gateway(
        stack.kernel.address,
        stack.keys_path,
        tmp_path_factory.mktemp("hasty"),
        "hasty",
        header_timeout_s=1,
        body_timeout_s=1,
        http=request.param,
    ) as process:
        yield process


def keyed_get(url: str, source: str, key: str) -> bytes:
    sock = connect(url, source)
    try:
        sock.sendall(request("GET", "/v1/models", host_port(url)[1], {"Authorization": f"Bearer {key}"}))
        return read_response(sock)
    finally:
        sock.close()


def upload_head(port: int, headers: dict, size: int = UPLOAD) -> bytes:
    return request(
        "POST",
        "/v1/chat/completions",
        port,
        {**headers, "Content-Type": "application/json", "Content-Length": str(size)},
    )


def test_unauthenticated_and_oversized_uploads_are_refused_before_their_body_is_sent(stack, plain):
    port = host_port(plain.url)[1]
    cases = [
        ({}, UPLOAD, 401),
        ({"Authorization": "Bearer sk-aios-nope"}, UPLOAD, 401),
        ({"Authorization": f"Basic {stack.keys['alice']}"}, UPLOAD, 401),
        ({"Authorization": f"Bearer {stack.keys['alice']}"}, UPLOAD + 1, 413),
    ]
    for headers, size, expected in cases:
        sock = connect(plain.url)
        try:
            sock.sendall(upload_head(port, headers, size))  # the head only: the answer cannot wait for the body
            response = read_response(sock)
            assert status(response) == expected, response[:200]
            assert b"connection: close" in response.lower()
            assert closed_by_server(sock)
        finally:
            sock.close()
    assert status(keyed_get(plain.url, "127.0.0.1", stack.keys["alice"])) == 200


def test_forty_unauthenticated_8mib_uploads_leave_the_gateway_rss_bounded(stack, plain):
    port = host_port(plain.url)[1]
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * (UPLOAD - 100)}]}).encode()
    head = upload_head(port, {"Authorization": "Bearer sk-aios-nope"}, len(body))
    before, peak, answers = rss_kib(plain.pid), [0], []
    done = threading.Event()

    def upload(source: str) -> None:
        sock = connect(plain.url, source)
        try:
            sock.sendall(head)
            sock.sendall(body)
        except OSError:
            pass  # the gateway answered and closed without reading it
        try:
            answers.append(status(read_response(sock)))
        except OSError:
            answers.append(0)
        finally:
            sock.close()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], rss_kib(plain.pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    uploads = [threading.Thread(target=upload, args=(f"127.0.2.{i % 4 + 1}",)) for i in range(40)]
    for thread in uploads:
        thread.start()
    for thread in uploads:
        thread.join()
    done.set()
    sampler.join()
    after = rss_kib(plain.pid)
    print(f"gateway RSS before {before / 1024:.1f} MiB, peak {peak[0] / 1024:.1f}, after {after / 1024:.1f}")
    assert answers.count(401) >= 1 and set(answers) <= {0, 401}
    assert max(peak[0], after) - before < 32 << 10  # was +174 MiB peak, +107 MiB after, reading them all
    assert status(keyed_get(plain.url, "127.0.0.1", stack.keys["alice"])) == 200


def test_idle_connections_from_one_client_never_keep_a_keyed_request_out(stack, capped):
    idle = [connect(capped.url, "127.0.0.10") for _ in range(200)]
    try:
        # another client is served; so is the same one, whose new connection replaces its oldest idle one
        assert status(keyed_get(capped.url, "127.0.0.11", stack.keys["alice"])) == 200
        assert status(keyed_get(capped.url, "127.0.0.10", stack.keys["bob"])) == 200
        assert all(closed_by_server(sock) for sock in idle[:193])
        assert all(still_open(sock) for sock in idle[193:])  # the newest 7: its share of 8, less the one replaced
    finally:
        for sock in idle:
            sock.close()


def test_idle_connections_from_many_clients_never_fill_the_gateway(stack, capped):
    idle = [connect(capped.url, f"127.0.1.{client}") for client in range(1, 11) for _ in range(8)]  # 80 > 32
    try:
        assert status(keyed_get(capped.url, "127.0.0.12", stack.keys["alice"])) == 200
        assert sum(still_open(sock) for sock in idle) <= 31
    finally:
        for sock in idle:
            sock.close()


def test_a_client_whose_share_is_busy_gets_503_while_others_and_its_busy_requests_are_served(stack, capped, model):
    port = host_port(capped.url)[1]
    body = json.dumps({"model": model, "prompt": "hi", "max_tokens": 1}).encode()
    head = request(
        "POST",
        "/v1/completions",
        port,
        {
            "Authorization": f"Bearer {stack.keys['alice']}",
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            "Expect": "100-continue",
        },
    )
    busy = []
    try:
        for _ in range(8):
            sock = connect(capped.url, "127.0.0.20")
            busy.append(sock)
            sock.sendall(head)
            assert status(read_response(sock)) == 100  # the application is reading its body: busy
        extra = connect(capped.url, "127.0.0.20")
        try:
            assert status(read_response(extra)) == 503
            assert closed_by_server(extra)
        finally:
            extra.close()
        assert status(keyed_get(capped.url, "127.0.0.21", stack.keys["alice"])) == 200
        busy[0].sendall(body)
        assert status(read_response(busy[0])) == 200
    finally:
        for sock in busy:
            sock.close()


def test_a_silent_connection_is_closed_at_its_header_deadline(hasty):
    sock = connect(hasty.url)
    try:
        assert closed_by_server(sock)
    finally:
        sock.close()


def test_slow_headers_are_cut(hasty):
    sock = connect(hasty.url)
    try:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        cut = False
        for _ in range(600):  # one header line per 0.1 s: never done
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                cut = True
                break
            if closed_by_server(sock, 0.1):
                cut = True
                break
        assert cut
    finally:
        sock.close()


def test_a_slow_body_is_cut(stack, hasty):
    port = host_port(hasty.url)[1]
    sock = connect(hasty.url)
    try:
        sock.sendall(
            request(
                "POST",
                "/v1/completions",
                port,
                {
                    "Authorization": f"Bearer {stack.keys['alice']}",
                    "Content-Type": "application/json",
                    "Content-Length": "600",
                },
            )
        )
        sent, cut = 0, False
        while sent < 600:  # one byte per 0.1 s: a minute for the body
            try:
                sock.sendall(b" ")
                sent += 1
            except OSError:
                cut = True
                break
            if closed_by_server(sock, 0.1):
                cut = True
                break
        assert cut and sent < 600
    finally:
        sock.close()
    assert status(keyed_get(hasty.url, "127.0.0.1", stack.keys["alice"])) == 200


def test_oversized_headers_are_431(hasty):
    sock = connect(hasty.url)
    try:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            for _ in range(32):  # 128 KiB of headers, never ended
                sock.sendall(b"X-Big: " + b"a" * 4088 + b"\r\n")
        except OSError:
            pass
        assert status(read_response(sock)) == 431
    finally:
        sock.close()
