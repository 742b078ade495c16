"""SIGTERM: calls in flight get an error reply, the socket file and the shared-memory arena are gone."""
import os
import re
import signal

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


def test_restart_after_kill_9_removes_the_dead_kernels_arena_and_socket(tmp_path):
    address = f"ipc://{tmp_path}/kernel.sock"
    with KernelProcess(address, KERNEL_OPTIONS, tmp_path / "killed.log") as killed:
        dead_pid = int(re.search(r"pid=(\d+)", killed.ready_line).group(1))
        dead_arena = f"/dev/shm/aios-{dead_pid}-kv"
        os.kill(dead_pid, signal.SIGKILL)
        killed.stop()                              # reaps the process; nothing was cleaned up
    assert os.path.exists(dead_arena) and (tmp_path / "kernel.sock").exists()
    with KernelProcess(address, KERNEL_OPTIONS, tmp_path / "restarted.log") as restarted:
        assert not os.path.exists(dead_arena)
        with connect(address) as k:
            assert k.generate("1, 2, 3,", max_tokens=4)     # the stale socket file did not block the new kernel
        live_pid = int(re.search(r"pid=(\d+)", restarted.ready_line).group(1))
        live_arena = f"/dev/shm/aios-{live_pid}-kv"
    assert not os.path.exists(live_arena)
