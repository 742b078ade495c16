"""An in-process kernel for tests: the real I/O thread, loop, context manager and sockets around a FakeEngine."""

from __future__ import annotations

import itertools
import json
import os
import socket
import tempfile
import threading
import time

import zmq

from ipc import runtime_dir
from ipc.address import ipc_path
from ipc.curve import ServerSecurity
from kernel.access.audit import AuditLog
from kernel.access.tokens import TokenRegistry
from kernel.context.manager import ContextManager
from kernel.daemon.dispatch import AccessPolicy
from kernel.daemon.inbound import DEFAULT_MAX_QUEUED, Inbox
from kernel.daemon.io_thread import SocketServer
from kernel.daemon.limits import AgentLimits
from kernel.daemon.loop import KernelLoop
from kernel.daemon.preprocess import PromptPreparer
from kernel.replies import Outbox
from kernel.scheduler.base import Scheduler
from kernel.scheduler.registry import make_scheduler
from kernel.services.factory import build_services
from tests.kernel.fake_engine import FakeEngine

_arena_numbers = itertools.count()


class InProcessKernel:
    def __init__(
        self,
        address: str,
        engine: FakeEngine | None = None,
        scheduler: Scheduler | None = None,
        lease_s: float = 30.0,
        max_frame_bytes: int = 1 << 20,
        security: ServerSecurity | None = None,
        limits: AgentLimits | None = None,
        max_queued: int = DEFAULT_MAX_QUEUED,
        services: bool = False,
        embedder=None,
        memory_options: dict | None = None,
        storage_options: dict | None = None,
        data_dir: str | None = None,
        tools: str | None = None,
        tool_approval: str = "ask",
        approval_timeout_s: float = 300.0,
        retention_policy=None,
    ):
        self.address = address
        self.engine = engine or FakeEngine()
        self.security = security
        self.limits = limits
        self.zmq = zmq.Context()
        self.inbox = Inbox(max_queued)
        # the operator's admin token and the audit log sit beside the socket, as with aiosd
        directory = os.path.dirname(ipc_path(address)) if ipc_path(address) else tempfile.mkdtemp(prefix="aios-test-")
        self.audit_path = os.path.join(directory, "audit.jsonl")
        self.access = AccessPolicy(
            tokens=TokenRegistry(os.path.join(directory, "admin.token")),
            audit=AuditLog(self.audit_path),
            allowed_uids=frozenset([os.getuid()]),
        )
        self.data_dir = data_dir or os.path.join(directory, "data")
        self.context = ContextManager(
            self.engine,
            arena_bytes=1 << 20,
            policy=retention_policy,
            kernel_id=f"{os.getpid()}.test{next(_arena_numbers)}",
        )
        self.services = (
            build_services(
                self.zmq,
                self.data_dir,
                self.access.audit,
                memory_options=memory_options,
                storage_options=storage_options,
                embedder=embedder,
                tools=tools,
                address=address,
                tokens=self.access.tokens,
                tool_approval=tool_approval,
                approval_timeout_s=approval_timeout_s,
                tool_observer=self.context,
            )
            if services
            else None
        )
        try:
            self.server = SocketServer(
                self.zmq, address, self.inbox, max_frame_bytes, security=security, prepare=PromptPreparer(self.engine)
            )
        except BaseException:
            if security is not None:
                security.close()
            self.zmq.term()
            raise
        self._scheduler = scheduler or make_scheduler("fifo")
        self._lease_s = lease_s
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-kernel-loop", daemon=True)
        self.loop: KernelLoop | None = None

    def _run(self) -> None:
        outbox = Outbox(self.zmq)  # sockets belong to the thread that uses them: the loop's
        self.loop = KernelLoop(
            self.engine,
            self.context,
            self._scheduler,
            self.inbox,
            outbox,
            access=self.access,
            lease_s=self._lease_s,
            idle_wait_s=0.05,
            limits=self.limits,
            services=self.services.syscalls if self.services else None,
        )
        self._started.set()
        try:
            self.loop.run()
        finally:
            outbox.stop_server()

    def __enter__(self) -> InProcessKernel:
        self.server.start()
        self._thread.start()
        assert self._started.wait(30)
        if self.services is not None:  # after the socket serves: tool servers may call back in
            self.services.start()
        return self

    @property
    def admin_token(self) -> str:
        return runtime_dir.read_secret(self.access.tokens.admin_token_path).decode()

    def stop(self) -> None:
        self.inbox.put_stop()
        self._thread.join(30)
        if self.services is not None:
            self.services.stop()
        self.server.join(30)

    def audit_records(self) -> list[dict]:
        """The main audit log's records, once every record made so far is written (the log writes on a thread)."""
        self.access.audit.flush()
        with open(self.audit_path) as log:
            return [json.loads(line) for line in log]

    def __exit__(self, *exc) -> None:
        self.stop()
        self.context.close()
        self.access.tokens.close()
        self.access.audit.close()
        if self.security is not None:  # its ZAP socket would keep the context from terminating
            self.security.close()
        self.zmq.term()


def wait_until(predicate, timeout_s: float = 60.0, what: str = "condition"):
    """Poll predicate() until it returns a truthy value (returned) or the generous deadline passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
