"""aiosd killed with SIGKILL in the middle of a stream of acknowledged writes: after a restart every acknowledged
fs.write and mem.add is there and intact, and nothing torn is visible. Repeated over several kill points."""

import hashlib
import os
import re
import signal
import threading

import pytest

from kernel.launch import KernelProcess
from sdk import KernelError, connect
from tests.e2e.conftest import KERNEL_OPTIONS
from tests.kernel.harness import wait_until


def _payload(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest() * (64 + 97 * (i % 50))  # 2 KiB .. 152 KiB


def _writer(address: str, acked: list[int], failure: list) -> None:
    try:
        with connect(address, name="crash-writer", timeout=120) as k:
            for i in range(100_000):
                k.fs.write(f"stream/f{i:05d}", _payload(i))
                acked.append(i)  # only after the kernel answered
    except KernelError as error:
        failure.append(error.code)


def _kill_during(tmp_path, options: dict, writer, kill_after: int) -> list:
    """Start aiosd, stream acknowledged writes from writer(address, acked, failure) in a thread, SIGKILL aiosd once
    kill_after of them were acknowledged; the acknowledged ones, after checking the writer saw the kernel go."""
    address = f"ipc://{tmp_path}/kernel.sock"
    acked, failure = [], []
    with KernelProcess(address, options, tmp_path / "killed.log") as kernel:
        thread = threading.Thread(target=writer, args=(address, acked, failure))
        thread.start()
        wait_until(lambda: len(acked) >= kill_after, timeout_s=300, what=f"{kill_after} acknowledged writes")
        os.kill(int(re.search(r"pid=(\d+)", kernel.ready_line).group(1)), signal.SIGKILL)
        thread.join(120)
        kernel.stop()
    assert failure == ["disconnected"] and len(acked) >= kill_after
    return acked


@pytest.mark.parametrize("kill_after", [3, 40, 150])
def test_every_acknowledged_write_survives_sigkill(tmp_path, kill_after):
    options = {**KERNEL_OPTIONS, "storage": "on", "data-dir": str(tmp_path / "data")}
    acked = _kill_during(tmp_path, options, _writer, kill_after)
    address = f"ipc://{tmp_path}/kernel.sock"
    with KernelProcess(address, options, tmp_path / "restarted.log"), connect(address, name="crash-writer") as k:
        stored = {f.path: f.version for f in k.fs.list("stream")}
        for i in acked:
            assert k.fs.read(f"stream/f{i:05d}") == _payload(i)
        for path in stored:  # the write in flight at the kill is there whole or not at all
            assert k.fs.read(path) == _payload(int(path.rsplit("f", 1)[1]))
        assert set(stored) - {f"stream/f{i:05d}" for i in acked} <= {f"stream/f{len(acked):05d}"}


def _memory_writer(address: str, acked: list[tuple[int, str]], failure: list) -> None:
    try:
        with connect(address, name="crash-memory", timeout=120) as k:
            for i in range(100_000):
                acked.append((i, k.memory.add(f"memory number {i}: {_payload(i)[:16].hex()}", {"i": i})))
    except KernelError as error:
        failure.append(error.code)


@pytest.mark.parametrize("kill_after", [25])  # more kill points: tests/memory/test_crash.py, in-process
def test_every_acknowledged_memory_survives_sigkill(tmp_path, kill_after):
    options = {**KERNEL_OPTIONS, "memory": "on", "data-dir": str(tmp_path / "data")}
    acked = _kill_during(tmp_path, options, _memory_writer, kill_after)
    address = f"ipc://{tmp_path}/kernel.sock"
    with KernelProcess(address, options, tmp_path / "restarted.log"), connect(address, name="crash-memory") as k:
        for i, memory_id in acked:
            record = k.memory.get(memory_id)
            assert record.text == f"memory number {i}: {_payload(i)[:16].hex()}" and record.metadata == {"i": i}
        assert len(k.memory.list(limit=1000)) in (len(acked), len(acked) + 1)  # + the add in flight, whole
