"""Shared bits of the tool tests: a config for the misbehaving test server, and a bounded wait on a call."""
from __future__ import annotations

from ipc.errors import ProtocolError
from kernel.tools.config import ServerConfig

# Generous: the futures resolve as soon as the manager answers; this only bounds a broken run.
WAIT_S = 120


def misc_server(name: str = "misc", **options) -> ServerConfig:
    return ServerConfig(name=name, command=["python", "-m", "tests.tools.servers.misc"], **options)


def result(future):
    return future.result(WAIT_S)


def error_of(future) -> ProtocolError:
    error = future.exception(WAIT_S)
    assert isinstance(error, ProtocolError), error
    return error
