"""Priority is a privilege: above the default it needs proc.renice (or the operator's renice), lowering is always
allowed, and neither hello, proc.set_priority on oneself or one's own agents, nor a call's priority hint gets around
it. Real sockets against the in-process kernel; property-based over the priorities an agent can ask for."""

import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipc.messages import DEFAULT_PRIORITY, PRIORITY_MAX, PRIORITY_MIN
from sdk import KernelError, connect
from tests.kernel.harness import InProcessKernel, wait_until

DENIED = "permission_denied"
PRIORITIES = st.integers(PRIORITY_MIN, PRIORITY_MAX)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    with InProcessKernel(f"ipc://{tmp_path_factory.mktemp('prio')}/kernel.sock") as running:
        yield running


def _code(call) -> str | None:
    try:
        call()
    except KernelError as error:
        return error.code
    return None


def _priority(observer, agent_id: str) -> int:
    return {a.agent_id: a.priority for a in observer.ps()}[agent_id]


def test_hello_above_the_default_needs_proc_renice(kernel):
    with pytest.raises(KernelError) as refused:
        connect(kernel.address, name="greedy", priority=DEFAULT_PRIORITY + 1)
    assert refused.value.code == DENIED and "proc.renice" in refused.value.message
    with connect(kernel.address, name="operator-run", priority=5, token=kernel.admin_token) as allowed:
        assert _priority(allowed, allowed.agent_id) == 5
    with connect(kernel.address, name="modest", priority=-7) as modest:
        assert _priority(modest, modest.agent_id) == -7


def test_an_agent_lowers_itself_freely_and_raises_itself_only_to_its_ceiling(kernel):
    with (
        connect(kernel.address, name="self", priority=-3) as agent,
        connect(kernel.address, name="operator", token=kernel.admin_token) as operator,
    ):
        me = agent.agent_id
        assert _code(lambda: agent.renice(me, DEFAULT_PRIORITY)) is None  # back to the default: fine
        assert _code(lambda: agent.renice(me, DEFAULT_PRIORITY + 1)) == DENIED
        assert _priority(operator, me) == DEFAULT_PRIORITY
        operator.renice(me, 7)  # the operator raises it
        assert _code(lambda: agent.renice(me, 2)) is None
        assert _code(lambda: agent.renice(me, 7)) is None  # up to what the operator set
        assert _code(lambda: agent.renice(me, 8)) == DENIED
        operator.renice(me, -4)  # and lowered, it stays lowered
        assert _code(lambda: agent.renice(me, DEFAULT_PRIORITY)) == DENIED
        assert _priority(operator, me) == -4


def test_an_owner_cannot_raise_its_own_agents_past_their_ceiling(kernel):
    # two connections of one process: each owns the other
    with connect(kernel.address, name="one") as one, connect(kernel.address, name="two") as two:
        assert _code(lambda: two.renice(one.agent_id, 7)) == DENIED
        assert _code(lambda: two.renice(one.agent_id, -2)) is None
        assert _priority(two, one.agent_id) == -2


def test_a_calls_priority_hint_stays_within_the_ceiling(kernel):
    with connect(kernel.address, name="hinter", priority=-5) as agent:
        assert _code(lambda: agent.generate("x", max_tokens=1, priority=5)) is None  # -5 + 5 = the default
        assert _code(lambda: agent.generate("x", max_tokens=1, priority=6)) == DENIED
        assert _code(lambda: agent.generate("x", max_tokens=1, priority=-10)) is None
    with connect(kernel.address, name="op-hinter", token=kernel.admin_token) as operator:
        assert _code(lambda: operator.generate("x", max_tokens=1, priority=10)) is None


def test_raising_oneself_under_a_held_hint_is_refused(kernel):
    """Low priority plus a big hint is allowed; raising the agent afterwards would carry the held call above it."""
    kernel.engine.stalled = True
    agent = connect(kernel.address, name="sneaky", priority=PRIORITY_MIN)
    try:
        call = threading.Thread(
            target=lambda: _code(lambda: agent.generate("x", max_tokens=4, priority=DEFAULT_PRIORITY - PRIORITY_MIN))
        )
        with connect(kernel.address, name="watcher", token=kernel.admin_token) as watcher:
            call.start()
            wait_until(
                lambda: any(
                    a.requests and a.agent_id == agent.agent_id and a.requests[-1].state in ("running", "waiting")
                    for a in watcher.ps()
                ),
                what="the hinted call held",
            )
            other = connect(kernel.address, name="sneaky-owner")  # same process: owns agent
            try:
                assert _code(lambda: other.renice(agent.agent_id, DEFAULT_PRIORITY)) == DENIED
                assert _code(lambda: other.renice(agent.agent_id, PRIORITY_MIN + 1)) == DENIED
            finally:
                other.close()
            held = [r for a in watcher.ps() if a.agent_id == agent.agent_id for r in a.requests]
            assert all(r.priority <= DEFAULT_PRIORITY for r in held)
    finally:
        kernel.engine.stalled = False
        call.join(60)
        agent.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hello=PRIORITIES, renice=PRIORITIES, hint=st.integers(PRIORITY_MIN - PRIORITY_MAX, PRIORITY_MAX - PRIORITY_MIN))
def test_without_proc_renice_no_path_runs_above_the_default(kernel, hello, renice, hint):
    refused = _code(lambda: connect(kernel.address, name="p", priority=hello).close())
    assert (refused == DENIED) == (hello > DEFAULT_PRIORITY)
    with connect(kernel.address, name="p", priority=min(hello, DEFAULT_PRIORITY)) as agent:
        before = _priority(agent, agent.agent_id)
        result = _code(lambda: agent.renice(agent.agent_id, renice))
        now = _priority(agent, agent.agent_id)
        assert now <= DEFAULT_PRIORITY
        assert (result is None) == (renice <= DEFAULT_PRIORITY) and now == (renice if result is None else before)
        result = _code(lambda: agent.generate("x", max_tokens=1, priority=hint))
        assert (result == DENIED) == (hint > 0 and now + hint > DEFAULT_PRIORITY)
