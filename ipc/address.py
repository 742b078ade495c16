"""Where the kernel listens: AIOS_ADDRESS, else a Unix socket in the user's runtime directory."""

from __future__ import annotations

import os

ADDRESS_ENV = "AIOS_ADDRESS"


def default_address() -> str:
    if os.environ.get(ADDRESS_ENV):
        return os.environ[ADDRESS_ENV]
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    directory = os.path.join(runtime_dir, "aios") if runtime_dir else f"/tmp/aios-{os.getuid()}"
    return f"ipc://{directory}/kernel.sock"


def admin_token_path(address: str) -> str:
    """Where the kernel serving address keeps the operator's admin token: beside its socket for ipc://, in the user's
    runtime directory for tcp:// (only the operator's own machine holds it)."""
    path = ipc_path(address)
    if path:
        return os.path.join(os.path.dirname(path) or ".", "admin.token")
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    directory = os.path.join(runtime_dir, "aios") if runtime_dir else f"/tmp/aios-{os.getuid()}"
    port = address.rpartition(":")[2]
    return os.path.join(directory, f"admin-{port}.token")


def ipc_path(address: str) -> str | None:
    """The socket file behind an ipc:// address, None for other transports."""
    return address[len("ipc://") :] if address.startswith("ipc://") else None


def check_address(address: str) -> str:
    """The address unchanged, or ValueError naming what is wrong with it."""
    if address.startswith("ipc://"):
        if not ipc_path(address):
            raise ValueError(f"ipc address without a path: {address!r}")
    elif address.startswith("tcp://"):
        host, _, port = address[len("tcp://") :].rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"tcp address must be tcp://host:port, got {address!r}")
    else:
        raise ValueError(f"address must start with ipc:// or tcp://, got {address!r}")
    return address
