"""proc.* and kernel.* syscalls, cancellation, dead agents, shutdown."""

import os

import pytest

from ipc.curve import INSECURE_TCP_ENV
from sdk import KernelError, connect
from tests.kernel.fake_engine import FakeEngine
from tests.kernel.harness import InProcessKernel, free_port, wait_until
from tests.kernel.raw_agent import RawAgent


def _replies(raw, count):
    return {reply["id"]: reply for reply in (raw.recv() for _ in range(count))}


def test_cancel_ends_the_call_with_an_error_and_frees_its_kv(kernel):
    kernel.engine.stalled = True
    raw = RawAgent(kernel.address)
    raw.hello()
    raw.send("llm.generate", 1, {"prompt": "long", "max_tokens": 1000})
    with connect(kernel.address) as k:
        wait_until(lambda: k.stats()["requests_running"] == 1, what="request running")
        raw.send("llm.cancel", 2, {"request_id": 1})
        replies = _replies(raw, 2)
        assert replies[1]["body"]["code"] == "cancelled" and replies[2]["type"] == "result"
        stats = k.stats()
    assert stats["requests_running"] == 0 and stats["free_slots"] == stats["total_slots"]
    assert raw.call("llm.cancel", 3, {"request_id": 1})["body"]["code"] == "not_found"
    raw.close()


def test_ps_and_renice(kernel):
    with connect(kernel.address, name="one", priority=-1) as one, connect(kernel.address, name="two") as two:
        one.generate("x", max_tokens=3)
        two.renice(one.agent_id, -7)  # lowering its own agent needs no capability
        table = {a.name: a for a in two.ps()}
        assert table["one"].priority == -7 and table["one"].pid == os.getpid()
        assert table["one"].service_tokens == 1 + 3
        assert [(r.state, r.prompt_tokens, r.output_tokens) for r in table["one"].requests] == [("done", 1, 3)]
        with pytest.raises(KernelError) as caught:
            two.renice("a999", 1)
        assert caught.value.code == "permission_denied"  # without proc.renice, others' agents are not its own
    with connect(kernel.address, token=kernel.admin_token) as operator, pytest.raises(KernelError) as caught:
        operator.renice("a999", 1)
    assert caught.value.code == "not_found"


def test_kill_aborts_the_victims_calls_and_refuses_its_next_ones(kernel):
    kernel.engine.stalled = True
    victim = RawAgent(kernel.address)
    victim_id = victim.hello("victim")
    victim.send("llm.generate", 1, {"prompt": "zzz", "max_tokens": 1000})
    with connect(kernel.address) as k:
        wait_until(lambda: k.stats()["requests_running"] == 1, what="request running")
        k.kill(victim_id)
        assert victim.recv()["body"]["code"] == "killed"
        assert victim.call("proc.list", 2, {})["body"]["code"] == "killed"
        assert victim.call("hello", 3, {"name": "again"})["body"]["code"] == "killed"
        stats = k.stats()
        assert stats["free_slots"] == stats["total_slots"] and victim_id not in {a.agent_id for a in k.ps()}
    victim.close()


def test_silent_agent_on_no_watched_pid_is_reaped_after_its_lease(tmp_path, monkeypatch):
    monkeypatch.setenv(INSECURE_TCP_ENV, "1")
    # over tcp:// the kernel has no pid to watch (plain tcp here: the harness has no Curve unless asked)
    with InProcessKernel(f"tcp://127.0.0.1:{free_port()}", lease_s=0.5) as kernel:
        kernel.engine.stalled = True
        silent = RawAgent(kernel.address)
        silent_id = silent.hello("remote")
        silent.send("llm.generate", 1, {"prompt": "zzz", "max_tokens": 1000})
        with connect(kernel.address, token=kernel.admin_token) as k:  # heartbeats while it waits: never reaped
            wait_until(lambda: silent_id not in {a.agent_id for a in k.ps()}, what="silent agent reaped")
            stats = k.stats()
        assert silent.recv()["body"]["code"] == "killed"
        assert stats["free_slots"] == stats["total_slots"]
        silent.close()


def test_shutdown_answers_calls_in_flight_and_removes_the_socket(tmp_path):
    path = tmp_path / "k.sock"
    raw = RawAgent(f"ipc://{path}")
    with InProcessKernel(f"ipc://{path}", FakeEngine()) as kernel:
        kernel.engine.stalled = True
        raw.hello()
        raw.send("llm.generate", 1, {"prompt": "x", "max_tokens": 1000})
        with connect(kernel.address) as k:
            wait_until(lambda: k.stats()["requests_running"] == 1, what="request running")
        assert path.exists()
    assert raw.recv()["body"]["code"] == "shutdown"
    assert not path.exists()
    raw.close()


def test_second_kernel_on_a_live_address_is_refused(kernel):
    from kernel.daemon.io_thread import AddressInUse

    with pytest.raises(AddressInUse):
        InProcessKernel(kernel.address)
