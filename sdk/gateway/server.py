"""Running the gateway: `aios gateway --listen HOST:PORT [--keys FILE]` serves create_app() with uvicorn, as a
process of its own that is an aiosd client.

The listening socket is bound before the server starts, so port 0 works: the ready line on stdout,
"aios gateway ready url=http://HOST:PORT/v1 ...", names the port actually bound (tests and scripts wait for it).
The keys file is --keys, else the default one (default_keys_path()) if it exists; without one every request runs as
one agent, "gateway", with no authentication: allowed on a loopback address only. SIGINT/SIGTERM stop it (uvicorn's
handlers): open connections are given a few seconds, then the kernel connections close, which cancels their calls in
the kernel.
"""
from __future__ import annotations

import asyncio
import ipaddress
import os
import socket

import uvicorn

from sdk.gateway.app import create_app

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


def serve(address: str, listen: str, keys_path: str | None, log_level: str = "warning") -> int:
    host, port = parse_listen(listen)
    if keys_path is None and not is_loopback(host):
        raise ValueError(f"without --keys the gateway has no authentication: listen on a loopback address, not "
                         f"{host!r}")
    app = create_app(address, keys_path)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    bound = sock.getsockname()[1]
    # the asyncio loop (not uvloop): the SDK's zmq.asyncio sockets are known to work on it
    config = uvicorn.Config(app, log_level=log_level, access_log=False, loop="asyncio", lifespan="on",
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)

    async def run() -> None:
        async def announce() -> None:
            while not server.started:
                if server.should_exit:
                    return
                await asyncio.sleep(0.01)
            shown = f"[{host}]" if family == socket.AF_INET6 else host
            print(f"{READY_PREFIX} url=http://{shown}:{bound}/v1 kernel={address} "
                  f"keys={keys_path or 'none (one open agent)'}", flush=True)
        announcer = asyncio.create_task(announce())
        try:
            await server.serve(sockets=[sock])
        finally:
            announcer.cancel()

    asyncio.run(run())
    return 0 if server.started else 1
