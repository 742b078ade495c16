"""The syscall table (ipc/syscalls.py) is the one place syscalls are declared: the kernel serves exactly its syscalls,
the dispatcher enforces and audits each row's capability before any handler runs, and the services sit below the
daemon (importing any of them loads no kernel.daemon module)."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kernel.services
from ipc.codec import Envelope
from ipc.errors import ErrorCode
from ipc.messages import Ack, Hello
from ipc.syscalls import BY_NAME, PREPROCESSED, TABLE, TOKENIZED, Family, Worker
from kernel.access.audit import Decision
from kernel.access.capabilities import Capability
from kernel.access.tokens import TokenRegistry
from kernel.daemon.agents import AgentTable
from kernel.daemon.dispatch import AccessPolicy, Syscalls
from kernel.daemon.inbound import Inbound, Peer
from kernel.daemon.llm import LLMService
from kernel.scheduler.registry import make_scheduler
from tests.kernel.fake_engine import FakeEngine
from tests.kernel.harness import InProcessKernel

SERVICE_FAMILIES = (Family.MEM, Family.FS, Family.TOOL)


class RecordingOutbox:
    def __init__(self):
        self.replies: list[tuple] = []

    def result(self, identity, req_id, body):
        self.replies.append(("result", req_id, body))

    def error(self, identity, req_id, code, message, retry_after_s=None):
        self.replies.append(("error", req_id, code))

    def fail(self, identity, req_id, error):
        self.error(identity, req_id, error.code, error.message, error.retry_after_s)


class RecordingAudit:
    path = None

    def __init__(self):
        self.records: list[dict] = []

    def record(self, **entry):
        self.records.append(entry)


class FakeServices:
    """Handlers for the services' syscalls (access.share and the mem, fs and tool families), and nothing else."""

    def __init__(self, extra: tuple[str, ...] = ()):
        self.names = [s.name for s in TABLE if s.family in SERVICE_FAMILIES or s.name == "access.share"]
        self.names += list(extra)

    def handlers(self) -> dict:
        return {name: lambda call, body: Ack() for name in self.names}

    def agent_ended(self, agent) -> None:
        pass


def _dispatcher(services=None) -> tuple[Syscalls, RecordingOutbox, RecordingAudit]:
    outbox, audit, agents = RecordingOutbox(), RecordingAudit(), AgentTable()
    llm = LLMService(FakeEngine(), None, make_scheduler("fifo"), agents, outbox)
    access = AccessPolicy(tokens=TokenRegistry(None), audit=audit, allowed_uids=frozenset([os.getuid()]))
    return Syscalls(agents, llm, outbox, "fake", access, services), outbox, audit


def test_importing_the_services_loads_no_daemon_module():
    modules = [f"kernel.services.{m.name}" for m in pkgutil.iter_modules(kernel.services.__path__)]
    assert modules  # the package was found
    probe = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(','.join(sorted(m for m in sys.modules if m == 'kernel.daemon' or m.startswith('kernel.daemon.'))))\n"
    )
    cwd = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=cwd)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"kernel.services imports the daemon: {done.stdout.strip()}"


def test_a_kernel_with_every_service_serves_exactly_the_table(tmp_path):
    with InProcessKernel(f"ipc://{tmp_path}/kernel.sock", services=True, tools="default") as running:
        served = set(running.loop.syscalls.handlers)
    assert served == set(BY_NAME)


def test_a_kernel_without_services_serves_the_rest_of_the_table():
    syscalls, _, _ = _dispatcher()
    unserved = set(BY_NAME) - set(syscalls.handlers)
    assert set(syscalls.handlers) <= set(BY_NAME)
    assert unserved and all(BY_NAME[name].family in SERVICE_FAMILIES + (Family.ACCESS,) for name in unserved)


def test_a_handler_for_a_syscall_not_in_the_table_is_refused():
    with pytest.raises(ValueError, match="mem.frobnicate"):
        _dispatcher(FakeServices(extra=("mem.frobnicate",)))


def test_the_routing_sets_follow_the_table():
    """What the I/O thread hands the preprocessor, and what the preprocessor tokenizes, are read from the rows."""
    assert TOKENIZED and TOKENIZED <= PREPROCESSED
    for s in TABLE:
        assert (s.name in TOKENIZED) == (s.worker is Worker.PREPROCESSOR)
        assert (s.name in PREPROCESSED) == (s.family is Family.LLM)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(syscall=st.sampled_from(TABLE), held=st.frozensets(st.sampled_from(list(Capability))))
def test_the_dispatcher_enforces_and_audits_the_tables_capability(syscall, held):
    """Whatever an agent holds, a syscall needing a capability it lacks is refused permission_denied at the door
    (its handler never runs, one denial is audited); one it may make reaches its handler, and the door records
    nothing of its own."""
    syscalls, outbox, audit = _dispatcher(FakeServices())
    agent = syscalls.agents.register(b"agent", Hello(name="probe"), Peer("", os.getuid(), os.getpid()), held, 0.0)
    reached = []
    syscalls.handlers = {name: (lambda call, body, name=name: reached.append(name) or Ack()) for name in BY_NAME}
    syscalls.handle(Inbound(b"agent", Envelope(7, syscall.name, None), time.monotonic()), now=0)
    allowed = syscall.capability is None or syscall.capability in held
    assert reached == ([syscall.name] if allowed else [])
    if allowed:
        assert outbox.replies == [("result", 7, Ack())] and audit.records == []
    else:
        assert outbox.replies == [("error", 7, ErrorCode.DENIED)]
        assert [(r["agent"], r["syscall"], Decision(r["decision"]), r["reason"]) for r in audit.records] == [
            (agent, syscall.name, Decision.DENY, f"lacks {syscall.capability.value}")
        ]


@settings(max_examples=60, deadline=None)
@given(syscall=st.sampled_from([s for s in TABLE if not s.open]))
def test_only_open_syscalls_are_served_before_hello(syscall):
    syscalls, outbox, _ = _dispatcher(FakeServices())
    reached = []
    syscalls.handlers = {name: (lambda call, body, name=name: reached.append(name) or Ack()) for name in BY_NAME}
    syscalls.handle(Inbound(b"stranger", Envelope(3, syscall.name, None), time.monotonic()), now=0)
    assert reached == [] and outbox.replies == [("error", 3, ErrorCode.HELLO_REQUIRED)]
