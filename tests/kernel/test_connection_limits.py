"""One local process cannot crash the kernel by opening connections (issue 17, item 2). A kernel process of its own
(tests/kernel/limited_kernel.py, real ipc sockets) with a small descriptor limit: silent connections past the cap are
dropped (libzmq closes them: the client reads end-of-file), silent ones are reaped at the hello deadline, a
well-behaved agent still connects and is served meanwhile, a hello over the agent cap is answered busy naming the
limit, and near the descriptor limit the kernel stops listening instead of aborting, then listens again."""

import json
import os
import resource
import select
import socket
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sdk
from ipc import runtime_dir
from kernel.daemon.connections import ConnectionTracker
from kernel.daemon.limits import FD_RESERVE_MIN, ConnectionBudget, reserve_of
from tests.kernel.harness import wait_until
from tests.kernel.raw_agent import RawAgent

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL_LIMIT = 1024  # the limit the kernel aborted at
HELLO_TIMEOUT_S = 2.0
EOF_TIMEOUT_S = 60.0  # generous: a dropped connection is closed within milliseconds


class LimitedKernel:
    def __init__(self, tmp_path, soft: int, hard: int, *options: str):
        self.path = str(tmp_path / "kernel.sock")
        self.address = f"ipc://{self.path}"

        def limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.kernel.limited_kernel", self.address, str(HELLO_TIMEOUT_S), *options],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(tmp_path / "kernel.log", "w"),
            text=True,
            preexec_fn=limit,
        )
        self.info = json.loads(self.process.stdout.readline())
        self.budget = ConnectionBudget(**{k: v for k, v in self.info.items() if k not in ("pid", "admin_token")})
        self.base_fds = self.fds()

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def alive(self) -> bool:
        return self.process.poll() is None

    def command(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "ok"

    def close(self) -> int:
        self.process.stdin.close()
        return self.process.wait(60)


@pytest.fixture
def small_kernel(tmp_path):
    kernel = LimitedKernel(tmp_path, SMALL_LIMIT, SMALL_LIMIT)
    yield kernel
    if kernel.alive():
        assert kernel.close() == 0


def _silent(path: str) -> socket.socket:
    """A connection that never speaks (not even ZMTP's greeting)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return sock


def _closed_by_kernel(sock: socket.socket) -> bool:
    """Read (the kernel's greeting, if any) until end-of-file; False if the kernel keeps it open that long."""
    poller = select.poll()  # not select(): these descriptors may be numbered past 1024
    poller.register(sock, select.POLLIN)
    while poller.poll(EOF_TIMEOUT_S * 1000):
        try:
            if not sock.recv(4096):
                return True
        except ConnectionResetError:
            return True
    return False


def test_silent_connections_over_the_cap_are_dropped_and_the_kernel_stays_alive(small_kernel):
    cap = small_kernel.budget.max_connections_per_principal
    held = []
    for _ in range(4):  # four caps' worth, a batch of a cap at a time, each time until the kernel catches up
        held += [_silent(small_kernel.path) for _ in range(cap)]
        wait_until(lambda: small_kernel.fds() <= small_kernel.base_fds + cap, what="over-cap connections dropped")
    assert len(held) == 4 * cap >= SMALL_LIMIT and small_kernel.alive()  # the kernel aborted here
    assert _closed_by_kernel(held[0])  # the oldest silent ones made room for the newer ones

    # a well-behaved agent of the same uid still gets in, while the cap's worth of silent connections is held
    with sdk.connect(small_kernel.address, name="good", timeout=EOF_TIMEOUT_S) as good:
        assert good.generate("hello", max_tokens=3)
        good.ping()

    # the silent ones are reaped at the hello deadline; the agent's own connection ended too
    wait_until(lambda: small_kernel.fds() <= small_kernel.base_fds, what="silent connections reaped")
    assert _closed_by_kernel(held[-1])
    assert small_kernel.alive()
    for sock in held:
        sock.close()


def test_a_hello_over_the_agent_cap_is_busy_naming_the_limit(tmp_path):
    kernel = LimitedKernel(tmp_path, SMALL_LIMIT, SMALL_LIMIT, "--per-principal", "8")
    try:
        cap = kernel.budget.max_agents_per_principal
        assert 1 <= cap < 8
        agents = [sdk.connect(kernel.address, name=f"a{i}", timeout=EOF_TIMEOUT_S) for i in range(cap)]
        with pytest.raises(sdk.KernelError) as refused:
            sdk.connect(kernel.address, name="one-too-many", timeout=EOF_TIMEOUT_S)
        assert refused.value.code == "busy" and f"limit per principal ({cap})" in refused.value.message
        admin = runtime_dir.read_secret(kernel.info["admin_token"]).decode()
        with sdk.connect(kernel.address, name="operator", token=admin, timeout=EOF_TIMEOUT_S) as operator:
            assert len(operator.ps()) == cap + 1  # the operator still gets in, to clean up
        agents.pop().close()  # room again once one leaves
        wait_until(lambda: _connects(kernel.address), what="a freed agent slot")
        for agent in agents:
            agent.close()
        assert kernel.alive()
    finally:
        assert kernel.close() == 0


def _connects(address: str) -> bool:
    try:
        sdk.connect(address, name="later", timeout=EOF_TIMEOUT_S).close()
    except sdk.KernelError as error:
        assert error.code == "busy"
        return False
    return True


def test_near_the_descriptor_limit_the_kernel_stops_listening_instead_of_aborting(small_kernel):
    reserve = reserve_of(SMALL_LIMIT)
    small_kernel.command(f"ballast {SMALL_LIMIT - reserve // 2 - small_kernel.fds() + 8}")  # past the brake
    try:
        _silent(small_kernel.path).close()  # a connection wakes the I/O thread, which looks at its table
    except OSError:
        pass
    wait_until(lambda: not _listening(small_kernel.path), what="the kernel stopped listening")
    assert small_kernel.alive()
    small_kernel.command("release")
    wait_until(lambda: _listening(small_kernel.path), what="the kernel listening again")
    with sdk.connect(small_kernel.address, name="after", timeout=EOF_TIMEOUT_S) as agent:
        agent.ping()


def _listening(path: str) -> bool:
    try:
        _silent(path).close()
    except ConnectionRefusedError:
        return False
    return True


def test_a_flood_at_full_speed_does_not_abort_a_kernel_that_raised_its_limit(tmp_path):
    """The issue's crash: ~1,000 silent connections against a 1,024 soft limit. aiosd raises it to the hard limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard < 8 * SMALL_LIMIT:
        pytest.skip(f"the hard descriptor limit ({hard}) leaves nothing to raise to")
    kernel = LimitedKernel(tmp_path, SMALL_LIMIT, min(hard, 1 << 16), "--raise")
    try:
        assert kernel.budget.fd_limit > SMALL_LIMIT
        flood = [_silent(kernel.path) for _ in range(3 * SMALL_LIMIT)]
        with sdk.connect(kernel.address, name="good", timeout=EOF_TIMEOUT_S) as good:
            good.ping()
        wait_until(lambda: kernel.fds() <= kernel.base_fds, what="the flood reaped")
        assert kernel.alive()
        for sock in flood:
            sock.close()
    finally:
        assert kernel.close() == 0


def test_raise_fd_limit_raises_the_soft_limit_to_the_hard_one():
    script = (
        "import resource; from kernel.daemon.limits import raise_fd_limit; "
        "print(*raise_fd_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[1])"
    )

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096))

    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, preexec_fn=limit
    )
    assert done.stdout.split() == ["256", "4096", "4096"], done.stderr


@given(st.integers(2 * FD_RESERVE_MIN, 1 << 22))
def test_the_budget_fits_in_the_descriptor_limit(fd_limit):
    budget = ConnectionBudget.from_fd_limit(fd_limit)
    assert budget.max_connections + budget.max_agents + reserve_of(fd_limit) <= fd_limit
    assert 1 <= budget.max_agents <= budget.max_connections
    assert budget.max_agents_per_principal <= budget.max_agents
    assert budget.max_connections_per_principal <= budget.max_connections
    assert budget.max_agents_per_principal < budget.max_connections_per_principal or budget.max_agents == 1


ops = st.lists(
    st.one_of(
        st.tuples(st.just("accept"), st.integers(0, 1)),
        st.tuples(st.just("hello"), st.integers()),
        st.tuples(st.just("close"), st.integers()),
        st.tuples(st.just("tick"), st.floats(0, 3)),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(ops=ops)
def test_the_tracker_keeps_every_principal_within_its_caps(ops):
    """Real socket pairs (so SO_PEERCRED names a uid); a principal is the descriptor's, as the kernel sees it."""
    budget = ConnectionBudget(
        fd_limit=64,
        max_connections=6,
        max_connections_per_principal=4,
        max_agents=3,
        max_agents_per_principal=2,
        hello_timeout_s=1.0,
    )
    tracker = ConnectionTracker(budget)
    now, pairs, greeted, dropped = 0.0, {}, set(), set()
    try:
        for op, value in ops:
            if op == "accept":
                ours, theirs = socket.socketpair()
                pairs[ours.fileno()] = (ours, theirs)
                victims = tracker.accepted(ours.fileno(), now)
            elif op == "hello" and pairs:
                fd = sorted(pairs)[value % len(pairs)]
                if not tracker.hello(fd, b"id%d" % fd):
                    greeted.add(fd)
                victims = []
            elif op == "close" and pairs:
                fd = sorted(pairs)[value % len(pairs)]
                tracker.disconnected(fd)
                for sock in pairs.pop(fd):
                    sock.close()
                greeted.discard(fd)
                dropped.discard(fd)
                victims = []
            else:
                now += value
                victims = tracker.expired(now)
            for fd, inode in victims:
                assert fd not in greeted, "a connection that said hello is never dropped"
                assert inode == os.fstat(fd).st_ino
                dropped.add(fd)
            assert len(tracker) <= budget.max_connections
            assert tracker.held(f"uid:{os.getuid()}") <= budget.max_connections_per_principal
            assert len(tracker) == len(set(pairs) - dropped)
    finally:
        for pair in pairs.values():
            for sock in pair:
                sock.close()


def test_a_connection_dropped_over_the_cap_tells_the_sdk_why(tmp_path):
    """Every connection of the uid busy (an agent, and one whose hello was refused but which stays open): the next is
    dropped at accept, with nothing to answer; the SDK says the kernel is at its limit, not that credentials failed."""
    kernel = LimitedKernel(tmp_path, SMALL_LIMIT, SMALL_LIMIT, "--per-principal", "2")
    try:
        assert kernel.budget.max_agents_per_principal == 1
        agent = sdk.connect(kernel.address, name="the-one", timeout=EOF_TIMEOUT_S)
        stubborn = RawAgent(kernel.address)
        assert stubborn.call("hello", 1, {"name": "stubborn"})["body"]["code"] == "busy"
        with pytest.raises(sdk.KernelError) as dropped:
            sdk.connect(kernel.address, name="third", timeout=EOF_TIMEOUT_S)
        assert dropped.value.code == "busy" and "connections of this user" in dropped.value.message
        stubborn.close()
        agent.ping()
        agent.close()
        assert kernel.alive()
    finally:
        assert kernel.close() == 0
