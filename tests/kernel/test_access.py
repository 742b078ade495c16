"""Authorization: an agent acts on itself and the agents it owns; anyone else's needs a capability (admin token or a
grant), and every denial and use of a capability is in the audit log. Identity comes from the connection."""

import os

import pytest

from sdk import KernelError, connect
from tests.kernel.other_process import OtherProcessAgent
from tests.kernel.raw_agent import RawAgent


def test_an_agent_cannot_kill_renice_or_see_another_processes_agent(kernel):
    with OtherProcessAgent(kernel.address, "victim") as victim, connect(kernel.address, name="hostile") as hostile:
        for attempt in (lambda: hostile.kill(victim.agent_id), lambda: hostile.renice(victim.agent_id, 20)):
            with pytest.raises(KernelError) as denied:
                attempt()
            assert denied.value.code == "permission_denied"
        assert [a.agent_id for a in hostile.ps()] == [hostile.agent_id]
        with connect(kernel.address, token=kernel.admin_token) as operator:
            assert victim.agent_id in {a.agent_id for a in operator.ps()}  # the victim is alive and well
            assert {a.agent_id: a.priority for a in operator.ps()}[victim.agent_id] == 0
    denials = [e for e in kernel.audit_records() if e["decision"] == "deny"]
    assert [(e["syscall"], e["target"], e["agent"]) for e in denials] == [
        ("proc.kill", victim.agent_id, hostile.agent_id),
        ("proc.set_priority", victim.agent_id, hostile.agent_id),
    ]
    assert denials[0]["pid"] == os.getpid() and denials[0]["principal"] == f"uid:{os.getuid()}"


def test_the_operator_kills_any_agent_and_it_is_audited(kernel):
    with OtherProcessAgent(kernel.address, "victim") as victim:
        with connect(kernel.address, token=kernel.admin_token) as operator:
            operator.kill(victim.agent_id)
            assert victim.agent_id not in {a.agent_id for a in operator.ps()}
    allowed = [e for e in kernel.audit_records() if e["syscall"] == "proc.kill"]
    assert [(e["decision"], e["target"]) for e in allowed] == [("allow", victim.agent_id)]


def test_a_grant_carries_only_what_was_granted(kernel):
    with OtherProcessAgent(kernel.address, "victim") as victim:
        with connect(kernel.address, token=kernel.admin_token) as operator:
            token = operator.grant(["proc.view"])
        with connect(kernel.address, token=token) as viewer:
            assert victim.agent_id in {a.agent_id for a in viewer.ps()}
            with pytest.raises(KernelError) as denied:
                viewer.kill(victim.agent_id)
            assert denied.value.code == "permission_denied"
            with pytest.raises(KernelError) as denied:  # it cannot grant what it does not hold
                viewer.grant(["proc.kill"])
            assert denied.value.code == "permission_denied"


def test_an_unknown_token_or_capability_is_refused(kernel):
    with pytest.raises(KernelError) as refused:
        connect(kernel.address, token="not-a-token")
    assert refused.value.code == "permission_denied"
    with connect(kernel.address, token=kernel.admin_token) as operator, pytest.raises(KernelError) as bad:
        operator.grant(["root"])
    assert bad.value.code == "bad_request"


def test_the_pid_is_the_connections_not_the_one_claimed(kernel):
    raw = RawAgent(kernel.address)
    try:
        reply = raw.call("hello", 1, {"name": "liar", "pid": 1})
        assert reply["body"]["code"] == "bad_request"  # the field no longer exists
        agent_id = raw.hello("liar")
        with connect(kernel.address) as k:  # same process: it owns the raw agent
            assert {a.agent_id: a.pid for a in k.ps()}[agent_id] == os.getpid()
    finally:
        raw.close()


def test_own_agents_include_another_connection_of_the_same_process(kernel):
    with connect(kernel.address, name="one") as one, connect(kernel.address, name="two") as two:
        two.renice(one.agent_id, -5)
        assert {a.name for a in two.ps()} == {"one", "two"}
        two.kill(one.agent_id)
        with pytest.raises(KernelError) as killed:
            one.ps()
        assert killed.value.code == "killed"


def test_an_agent_owns_the_agents_of_processes_it_started(kernel):
    with OtherProcessAgent(kernel.address, "sub-agent", detached=False) as child:
        with connect(kernel.address, name="orchestrator") as orchestrator:
            assert child.agent_id in {a.agent_id for a in orchestrator.ps()}
            orchestrator.kill(child.agent_id)
            assert child.agent_id not in {a.agent_id for a in orchestrator.ps()}
