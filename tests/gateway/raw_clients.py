"""Raw-socket HTTP clients for the gateway's hostile-client tests: what httpx will not do (stop mid-headers, hold a
connection idle, pick a loopback source address so one machine is many clients)."""

from __future__ import annotations

import os
import select
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from kernel.gateway.process import GatewayProcess

WAIT_S = 60.0  # generous: the machine is shared


def host_port(url: str) -> tuple[str, int]:
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    return host, int(port)


def connect(url: str, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))  # all of 127/8 is loopback on Linux: each source address is another client
    sock.settimeout(WAIT_S)
    sock.connect(host_port(url))
    return sock


def request(method: str, path: str, port: int, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_response(sock: socket.socket) -> bytes:
    """One response's bytes (head and a Content-Length body), b"" if the server closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        if not part:
            return data
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    while len(body) < length:
        part = sock.recv(65536)
        if not part:
            break
        body += part
    return head + b"\r\n\r\n" + body


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def closed_by_server(sock: socket.socket, timeout_s: float = WAIT_S) -> bool:
    """True once the server closed sock (EOF or reset, any response before it read and dropped); False if it is
    still open after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], deadline - time.monotonic())
        if not readable:
            return False
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def still_open(sock: socket.socket) -> bool:
    """Nothing to read and no EOF: the server holds it open, unanswered. (Readable would be EOF, a reset, or an
    answer to a request it never sent: a refusal.)"""
    readable, _, _ = select.select([sock], [], [], 0)
    return not readable


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@contextmanager
def gateway(address: str, keys_path: str | None, workdir: Path, name: str, **limits):
    """A gateway process of its own with connection limits (kernel/gateway/connections.py) from limits; no default keys
    file is picked up (XDG_CONFIG_HOME is workdir)."""
    env = {"XDG_CONFIG_HOME": str(workdir), **{f"AIOS_GATEWAY_{k.upper()}": str(v) for k, v in limits.items()}}
    os.makedirs(workdir, exist_ok=True)
    with GatewayProcess(address, keys_path, workdir / f"{name}.log", env=env) as process:
        yield process
