"""Running the gateway: `aios gateway --listen HOST:PORT [--keys FILE]` serves create_app() with uvicorn, as a
process of its own that is an aiosd client.

The listening socket is bound before the server starts, so port 0 works: the ready line on stdout,
"aios gateway ready url=http://HOST:PORT/v1 ...", names the port actually bound (tests and scripts wait for it).
The keys file is --keys, else the default one (default_keys_path()) if it exists; without one every request runs as
one agent, "gateway", with no authentication: allowed on a loopback address only. SIGINT/SIGTERM stop it (uvicorn's
handlers): open connections are given a few seconds, then the kernel connections close, which cancels their calls in
the kernel.

The event loop and HTTP parser: uvloop and httptools (C, both) when they are installed, else the asyncio loop and
h11; AIOS_GATEWAY_LOOP (uvloop | asyncio) and AIOS_GATEWAY_HTTP (httptools | h11) choose one explicitly (benches
compare them). Both cut the gateway's own per-request cost (bench/RESULTS.md, "Gateway").

Hostile clients: uvicorn's protocol runs with the deadlines and connection caps of kernel/gateway/connections.py
(AIOS_GATEWAY_* overrides), h11's incomplete-event cap at twice its header limit (a backstop: the guard's 431 comes
first), and the open-file soft limit raised to the hard one so the connection cap, not the descriptor table, is what
refuses. uvicorn's own
limit_concurrency stays off: it counts idle connections and would answer every request 503 once they filled it.
Requests are checked before their bodies are read by kernel/gateway/guard.py.

The dashboard (/ui) refreshes its kernel snapshot every ui_interval_s (`--ui-interval`, default from
AIOS_UI_INTERVAL_S, else 1 s): one kernel.top call per interval however many browsers watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ipaddress
import os
import resource
import socket

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from kernel.gateway.app import create_app
from kernel.gateway.connections import ConnectionGuard, ConnectionLimits, guarded

READY_PREFIX = "aios gateway ready"


def default_keys_path() -> str:
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(config, "aios", "gateway-keys.json")


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"--listen takes HOST:PORT, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


LOOP_ENV, HTTP_ENV = "AIOS_GATEWAY_LOOP", "AIOS_GATEWAY_HTTP"
UI_INTERVAL_ENV = "AIOS_UI_INTERVAL_S"


def ui_interval(value: str | float | None) -> float:
    """The dashboard's refresh interval: value, else $AIOS_UI_INTERVAL_S, else 1 s; ValueError unless 0.05..60 s."""
    raw = value if value is not None else os.environ.get(UI_INTERVAL_ENV, "1")
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"the dashboard's refresh interval must be seconds, got {raw!r}") from None
    if not 0.05 <= seconds <= 60:
        raise ValueError(f"the dashboard's refresh interval must be 0.05..60 s, got {raw!r}")
    return seconds


def _installed(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def server_stack() -> tuple[str, str]:
    """(loop, http) for uvicorn: the environment's choice, else the C implementations when installed."""
    loop = os.environ.get(LOOP_ENV) or ("uvloop" if _installed("uvloop") else "asyncio")
    http = os.environ.get(HTTP_ENV) or ("httptools" if _installed("httptools") else "h11")
    if loop not in ("uvloop", "asyncio") or http not in ("httptools", "h11"):
        raise ValueError(f"{LOOP_ENV} takes uvloop or asyncio, {HTTP_ENV} httptools or h11; got {loop!r}, {http!r}")
    return loop, http


def _protocol(http: str) -> type:
    if http == "h11":
        return H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # needs httptools installed

    return HttpToolsProtocol


def raise_fd_limit() -> None:
    """Soft open-file limit up to the hard one (the connection cap is derived from it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def serve(
    address: str, listen: str, keys_path: str | None, log_level: str = "warning", ui_interval_s: float | None = None
) -> int:
    host, port = parse_listen(listen)
    if keys_path is None and not is_loopback(host):
        raise ValueError(
            f"without --keys the gateway has no authentication: listen on a loopback address, not {host!r}"
        )
    app = create_app(address, keys_path, ui_interval(ui_interval_s))
    raise_fd_limit()
    limits = ConnectionLimits.from_env(os.environ).within_fd_limit()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    bound = sock.getsockname()[1]
    loop, http = server_stack()
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        loop=loop,
        lifespan="on",
        http=guarded(_protocol(http), ConnectionGuard(limits)),
        h11_max_incomplete_event_size=2 * limits.max_header_bytes,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)

    async def run() -> None:
        async def announce() -> None:
            while not server.started:
                if server.should_exit:
                    return
                await asyncio.sleep(0.01)
            shown = f"[{host}]" if family == socket.AF_INET6 else host
            print(
                f"{READY_PREFIX} url=http://{shown}:{bound}/v1 ui=http://{shown}:{bound}/ui kernel={address} "
                f"keys={keys_path or 'none (one open agent)'} loop={loop} http={http} "
                f"max_connections={limits.max_connections} max_per_client={limits.max_per_client}",
                flush=True,
            )

        announcer = asyncio.create_task(announce())
        try:
            await server.serve(sockets=[sock])
        finally:
            announcer.cancel()

    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:  # the loop uvicorn's "loop" names
        runner.run(run())
    return 0 if server.started else 1
