"""Build the kernel's services from its options: the data directory (private, 0700), the memory and storage workers,
the share table, and the syscalls that route to them.

The managers are imported and built inside their worker threads (SQLite connections belong to the thread that made
them), and a built service is a warm one: the memory worker's build ends with one embedding, so the model's first
forward (its lazy allocations and kernel choices) is paid before, not by, the first call. Services.start() returns
only once every worker is built (or failed to be, logged; its calls are answered with an error) or `ready_timeout_s`
passed, so the ready line aiosd prints after it means ready: nothing loads beside the engine's first calls."""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass

import zmq

from ipc import runtime_dir
from ipc.address import admin_token_path
from ipc.messages import Ack
from ipc.service_messages import MAX_FILE_BYTES
from kernel.access.capabilities import Capability
from kernel.access.shares import ShareTable
from kernel.services.syscalls import ServiceSyscalls
from kernel.services.tools import ToolService
from kernel.services.worker import ServiceWorker

log = logging.getLogger("aiosd.services")
KERNEL_LINKED_SERVERS = ("files", "memory")  # built-in tool servers that act on the caller's space via the SDK
# the embedding model loads in ~5-15 s on 2 busy cores; past this bound aiosd serves anyway, and the late service's
# calls wait in its queue until it is built
READY_TIMEOUT_S = 180.0
WARM_UP_TEXT = "The kernel warms its embedding model up before it says it is ready."


# per space (an agent's name under its principal): enough for an agent's notes and documents, not a disk
STORAGE_DEFAULTS = {
    "quota_bytes": 256 << 20,
    "max_file_bytes": MAX_FILE_BYTES,
    "max_files": 10_000,
    "keep_versions": 10,
    "max_spaces": 64,
}  # max_spaces: file spaces per principal


def default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "aios")


@dataclass
class Services:
    syscalls: ServiceSyscalls
    workers: list[ServiceWorker]
    tool_manager: object = None
    ready_timeout_s: float = READY_TIMEOUT_S

    def start(self) -> None:
        """Start every service and return once each is built (or failed to be), within ready_timeout_s."""
        started = time.monotonic()
        for worker in self.workers:
            worker.start()
        if self.tool_manager is not None:  # its servers start while the workers build: separate processes
            for server, why in self.tool_manager.start().items():  # bounded by each server's startup timeout
                log.error("tool server %s did not start: %s", server, why)
        deadline = started + self.ready_timeout_s
        for worker in self.workers:
            if not worker.ready.wait(max(0.0, deadline - time.monotonic())):
                log.warning(
                    "the %s service is still loading after %.0f s: its calls wait in its queue",
                    worker.name,
                    self.ready_timeout_s,
                )
            elif worker.broken is not None:
                log.error("%s: its calls are answered with an error", worker.broken)
        log.info("services ready in %.1f s", time.monotonic() - started)

    def stop(self) -> None:
        """Tool servers first, then each worker (its queued calls answered shutdown; the managers drop ephemeral
        spaces as they close), then this lifetime's ephemeral shares, and the share table's last state to disk."""
        if self.tool_manager is not None:
            self.tool_manager.stop()
        for worker in self.workers:
            worker.stop()
        if self.syscalls is not None:
            self.syscalls.drop_ephemeral_shares()
            self.syscalls.shares.close()


def _runtime_dir(address: str | None) -> str | None:
    """The directory of the kernel's socket and admin token."""
    return os.path.dirname(admin_token_path(address)) if address else None


def _hideable(path: str) -> bool:
    """A path a sandbox can be built without: not the interpreter's or the project's tree or one above them (a
    kernel whose socket sits in its source folder, say); such a path is left in view, with a warning."""
    from kernel.tools.sandbox import PROJECT_ROOT

    path = os.path.abspath(path)
    needed = [PROJECT_ROOT, sys.prefix, sys.base_prefix]
    if any(os.path.commonpath([path, tree]) == path for tree in needed):
        log.warning("%s holds the interpreter or the project: sandboxed tool servers are not kept from it", path)
        return False
    return True


def build_services(
    context: zmq.Context,
    data_dir: str,
    audit,
    *,
    memory: bool = True,
    storage: bool = True,
    memory_options: dict | None = None,
    storage_options: dict | None = None,
    embedder=None,
    tools: str | None = None,
    address: str | None = None,
    tokens=None,
    tool_approval: str = "ask",
    approval_timeout_s: float = 300.0,
    tool_observer=None,
    early_tools: bool = True,
) -> Services:
    """tools: None (no tool manager), "default" (the built-in servers) or a TOML/JSON config file. The files and
    memory tool servers reach back to this kernel at `address` with a grant (fs.any, mem.any) minted from `tokens`."""
    os.makedirs(os.path.dirname(os.path.abspath(data_dir)), exist_ok=True)
    runtime_dir.private_dir(data_dir)
    memory_worker = storage_worker = None
    if memory:

        def make_memory():
            from kernel.memory.manager import MemoryManager  # torch and the embedding model: in the worker

            manager = MemoryManager(os.path.join(data_dir, "memory"), embedder, **(memory_options or {}))
            try:
                manager.embedder.embed([WARM_UP_TEXT])
            except Exception:
                manager.close()
                raise
            return manager

        memory_worker = ServiceWorker("memory", context, make_memory, ack=Ack())
    if storage:

        def make_storage():
            from kernel.storage.manager import StorageManager

            return StorageManager(os.path.join(data_dir, "files"), **(STORAGE_DEFAULTS | (storage_options or {})))

        storage_worker = ServiceWorker("storage", context, make_storage, ack=Ack())
    tool_service = manager = None
    workers = [w for w in (memory_worker, storage_worker) if w is not None]
    if tools is not None:
        from kernel.tools import ToolManager, load_config

        config = load_config(None if tools == "default" else tools)
        # the kernel's own token: pinned, so no number of agents' grants can evict it and break these tools
        link = {
            "AIOS_ADDRESS": address or "",
            "AIOS_TOKEN": tokens.mint(frozenset([Capability.FS_ANY, Capability.MEM_ANY]), pinned=True),
        }
        for server in config.servers:
            if server.name in KERNEL_LINKED_SERVERS:
                server.env.update(link)
        # sandboxed servers see neither this kernel's runtime directory (socket, admin token), its audit log, nor
        # its data (every agent's spaces), wherever the options put them
        config.hide += [
            path for path in (_runtime_dir(address), getattr(audit, "path", None), data_dir) if path and _hideable(path)
        ]
        manager = ToolManager(config)
        replies = ServiceWorker("tool-replies", context, lambda: None, ack=Ack())
        workers.append(replies)
        tool_service = ToolService(
            manager, replies, audit, tool_approval, approval_timeout_s, observer=tool_observer, early=early_tools
        )
    syscalls = ServiceSyscalls(
        memory_worker, storage_worker, ShareTable(os.path.join(data_dir, "shares.json")), audit, tool_service
    )
    return Services(syscalls, workers, manager)
