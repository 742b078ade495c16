"""SIGTERM: calls in flight get an error reply, the socket file and the shared-memory arena are gone."""

import os
import re
import signal
import threading

import pytest

from kernel.launch import KernelProcess
from sdk import KernelError, connect
from tests.e2e.conftest import KERNEL_OPTIONS
from tests.kernel.harness import wait_until
from tests.kernel.raw_agent import RawAgent


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


def test_connect_to_no_kernel_fails_at_once_saying_how_to_start_one(tmp_path):
    with pytest.raises(KernelError) as caught:
        connect(f"ipc://{tmp_path}/nobody.sock")  # the default timeout is 600 s: it must not wait for it
    assert caught.value.code == "unavailable" and "aiosd" in caught.value.message
    (tmp_path / "stale.sock").touch()  # a socket file nobody listens on
    with pytest.raises(KernelError) as caught:
        connect(f"ipc://{tmp_path}/stale.sock")
    assert caught.value.code == "unavailable"


def test_the_cli_with_no_kernel_fails_fast_with_a_clear_message(tmp_path, capsys):
    from kernel.cli import main

    assert main(["--address", f"ipc://{tmp_path}/nobody.sock", "ps"]) == 1
    assert "no kernel is running" in capsys.readouterr().err


def test_restart_after_kill_9_removes_the_dead_kernels_arena_and_socket(tmp_path):
    address = f"ipc://{tmp_path}/kernel.sock"
    with KernelProcess(address, KERNEL_OPTIONS, tmp_path / "killed.log") as killed:
        dead_pid = int(re.search(r"pid=(\d+)", killed.ready_line).group(1))
        dead_arena = f"/dev/shm/aios-{dead_pid}-kv"
        os.kill(dead_pid, signal.SIGKILL)
        killed.stop()  # reaps the process; nothing was cleaned up
    assert os.path.exists(dead_arena) and (tmp_path / "kernel.sock").exists()
    with KernelProcess(address, KERNEL_OPTIONS, tmp_path / "restarted.log") as restarted:
        assert not os.path.exists(dead_arena)
        with connect(address) as k:
            assert k.generate("1, 2, 3,", max_tokens=4)  # the stale socket file did not block the new kernel
        live_pid = int(re.search(r"pid=(\d+)", restarted.ready_line).group(1))
        live_arena = f"/dev/shm/aios-{live_pid}-kv"
    assert not os.path.exists(live_arena)


def test_a_call_fails_at_once_when_the_kernel_dies_and_the_next_one_works_after_a_restart(tmp_path):
    address = f"ipc://{tmp_path}/kernel.sock"
    outcome = {}
    with KernelProcess(address, KERNEL_OPTIONS, tmp_path / "killed.log") as killed:
        k = connect(address, timeout=300)
        calling = threading.Thread(
            target=lambda: outcome.update(
                error=_error_of(lambda: k.generate("Count to a thousand:", max_tokens=3000, ignore_eos=True))
            )
        )
        calling.start()
        with connect(address) as watcher:
            wait_until(lambda: watcher.stats()["requests_running"] == 1, what="the call running")
        os.kill(int(re.search(r"pid=(\d+)", killed.ready_line).group(1)), signal.SIGKILL)
        calling.join(120)
        killed.stop()
    assert not calling.is_alive() and outcome["error"].code == "disconnected"
    with KernelProcess(address, KERNEL_OPTIONS, tmp_path / "restarted.log"):
        assert k.generate("1, 2, 3,", max_tokens=4)  # the same connection says hello again, transparently
    k.close()


def _error_of(call):
    try:
        call()
    except KernelError as error:
        return error
    return None
