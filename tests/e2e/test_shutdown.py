"""SIGTERM: calls in flight get an error reply, the socket file and the shared-memory arena are gone."""
import os
import re

from bench.kernel_proc import KernelProcess
from sdk import KernelError, connect
from tests.e2e.conftest import KERNEL_OPTIONS
from tests.kernel.raw_agent import RawAgent
from tests.kernel.harness import wait_until


def test_sigterm_answers_in_flight_calls_and_leaves_nothing_behind(tmp_path):
    socket_file = tmp_path / "kernel.sock"
    address = f"ipc://{socket_file}"
    raw = RawAgent(address)
    with KernelProcess(address, KERNEL_OPTIONS, tmp_path / "aiosd.log") as kernel:
        pid = int(re.search(r"pid=(\d+)", kernel.ready_line).group(1))
        arena = f"/dev/shm/aios-{pid}-kv"
        raw.hello()
        raw.send("llm.generate", 1, {"prompt": "Once upon a time", "max_tokens": 3000, "ignore_eos": True})
        with connect(address) as k:
            wait_until(lambda: k.stats()["requests_running"] == 1, what="request running")
        assert socket_file.exists() and os.path.exists(arena)
        assert kernel.stop() == 0
    reply = raw.recv()
    assert (reply["id"], reply["body"]["code"]) == (1, "shutdown")
    assert not socket_file.exists() and not os.path.exists(arena)
    raw.close()


def test_calls_to_a_stopped_kernel_time_out(tmp_path):
    try:
        connect(f"ipc://{tmp_path}/nobody.sock", timeout=0.5)
    except KernelError as error:
        assert error.code == "timeout"
    else:
        raise AssertionError("connect() to no kernel must time out")
