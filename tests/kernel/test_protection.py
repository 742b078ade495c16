"""Nothing one agent sends ends the kernel or fails another agent's call: injected faults in every phase, connections
that close or stop reading, per-agent limits, and a kernel that does not know a connection."""

import os

import msgpack
import pytest
import zmq

from ipc.messages import PROTOCOL_VERSION, KernelStats
from kernel.daemon.limits import AgentLimits
from kernel.scheduler.base import ReqState
from sdk import connect
from tests.kernel.fake_engine import expected_output
from tests.kernel.harness import InProcessKernel, wait_until
from tests.kernel.raw_agent import RawAgent


def _healthy(kernel) -> None:
    with connect(kernel.address, name="bystander") as k:
        assert k.generate("abc", max_tokens=3) == expected_output("abc", 3)


@pytest.mark.parametrize("phase", ["decode", "preprocess", "handler", "encode", "schedule"])
def test_a_fault_in_any_phase_fails_one_call_and_the_kernel_serves_on(kernel, monkeypatch, phase):
    import kernel.daemon.io_thread as io_thread

    boom = RuntimeError("injected fault")
    calls = {"n": 0}

    def once(real):
        def faulty(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 1:
                raise boom
            return real(*args, **kwargs)

        return faulty

    raw = RawAgent(kernel.address)
    raw.hello()
    if phase == "decode":
        monkeypatch.setattr(io_thread, "decode_request", once(io_thread.decode_request))
    elif phase == "preprocess":
        monkeypatch.setattr(kernel.engine, "tokenize", once(kernel.engine.tokenize))
    elif phase == "handler":
        table = kernel.loop.syscalls.handlers
        monkeypatch.setitem(table, "kernel.stats", once(table["kernel.stats"]))
    elif phase == "encode":  # a result msgpack cannot carry
        unencodable = lambda call, body: KernelStats(values={"unencodable": object()})  # noqa: E731
        monkeypatch.setitem(kernel.loop.syscalls.handlers, "kernel.stats", unencodable)
    elif phase == "schedule":  # the loop plans every turn, idle or not: fail the first plan that has a call to place
        real_schedule, llm = kernel.loop.llm.schedule, kernel.loop.llm

        def faulty_schedule(now):
            if not calls["n"] and llm.requests.in_state(ReqState.WAITING):
                calls["n"] += 1
                raise boom
            return real_schedule(now)

        monkeypatch.setattr(llm, "schedule", faulty_schedule)
    try:
        syscall, body = {
            "decode": ("kernel.ping", {}),
            "handler": ("kernel.stats", {}),
            "encode": ("kernel.stats", {}),
        }.get(phase, ("llm.generate", {"prompt": "x", "max_tokens": 2}))
        reply = raw.call(syscall, 7, body)
        assert reply["type"] == "error" and reply["body"]["code"] == "internal"
        assert reply["id"] in (7, None)  # a fault before the id is known cannot name the call
    finally:
        raw.close()
    _healthy(kernel)


def test_records_end_when_connections_close(kernel):
    fds_before = len(os.listdir("/proc/self/fd"))
    for _ in range(200):
        connect(kernel.address, name="brief").close()
    wait_until(lambda: len(kernel.loop.agents) == 0, what="every closed connection's agent gone")
    assert len(os.listdir("/proc/self/fd")) <= fds_before + 8  # a pidfd each would be 200 more
    _healthy(kernel)


def test_a_heartbeat_from_an_unknown_connection_is_told_hello_required(kernel):
    raw = RawAgent(kernel.address)
    try:
        raw.send("agent.heartbeat", None, {})
        reply = raw.recv()
        assert (reply["id"], reply["body"]["code"]) == (None, "hello_required")
    finally:
        raw.close()


def test_per_agent_limit_on_calls_in_flight(tmp_path):
    with InProcessKernel(f"ipc://{tmp_path}/k.sock", limits=AgentLimits(max_calls=2)) as kernel:
        kernel.engine.stalled = True
        raw = RawAgent(kernel.address)
        try:
            raw.hello()
            raw.send("llm.generate", 1, {"prompt": "a", "max_tokens": 100})
            raw.send("llm.generate", 2, {"prompt": "b", "max_tokens": 100})
            reply = raw.call("llm.generate", 3, {"prompt": "c", "max_tokens": 100})
            assert (reply["id"], reply["body"]["code"]) == (3, "busy")
            kernel.engine.stalled = False
            assert {raw.recv()["id"] for _ in range(2)} == {1, 2}
        finally:
            raw.close()


def test_a_client_that_stops_reading_has_its_calls_cancelled(tmp_path, monkeypatch):
    import kernel.daemon.io_thread as io_thread

    monkeypatch.setattr(io_thread, "SEND_HWM", 20)
    with InProcessKernel(f"ipc://{tmp_path}/k.sock") as kernel:
        context = zmq.Context()
        deaf = context.socket(zmq.DEALER)
        deaf.setsockopt(zmq.RCVHWM, 1)
        deaf.setsockopt(zmq.RCVBUF, 4096)
        deaf.connect(kernel.address)
        try:
            deaf.send(msgpack.packb({"v": PROTOCOL_VERSION, "id": 0, "type": "hello", "body": {"name": "deaf"}}))
            for i in range(1, 9):
                deaf.send(
                    msgpack.packb(
                        {
                            "v": PROTOCOL_VERSION,
                            "id": i,
                            "type": "llm.generate",
                            "body": {"prompt": "x" * 50, "max_tokens": 4000, "stream": True},
                        }
                    )
                )
            with connect(kernel.address, token=kernel.admin_token) as operator:
                wait_until(lambda: operator.stats()["tokens_generated"] > 0, what="the deaf agent's calls running")
                wait_until(
                    lambda: operator.stats()["requests_running"] + operator.stats()["requests_waiting"] == 0,
                    timeout_s=120,
                    what="the deaf agent's calls cancelled",
                )
        finally:
            deaf.close(linger=0)
            context.term()
        _healthy(kernel)


def test_one_connection_fills_only_its_own_share_of_the_inbox():
    from kernel.daemon.inbound import Inbox

    inbox = Inbox(max_queued=10, max_per_connection=3)
    assert [inbox.try_reserve(b"flood") for _ in range(4)] == [True, True, True, False]
    assert all(inbox.try_reserve(b"other") for _ in range(3))
    inbox.release(b"flood")
    assert inbox.try_reserve(b"flood") and not inbox.try_reserve(b"flood")
    assert [inbox.try_reserve(bytes([i])) for i in range(5)] == [True, True, True, True, False]  # 10 in all
