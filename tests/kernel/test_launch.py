"""The child-process harness (kernel/launch/child.py): ready when the line comes, a clear error when it does not."""

from __future__ import annotations

import sys

import pytest

from kernel.launch import ChildProcess, ChildStartError


def _child(tmp_path, code: str, timeout_s: float = 60.0) -> ChildProcess:
    return ChildProcess([sys.executable, "-c", code], "ready", tmp_path / "child.log", timeout_s, "child")


def test_start_returns_the_ready_line_and_stop_terminates(tmp_path):
    child = _child(tmp_path, "import time; print('noise'); print('ready pid=1', flush=True); time.sleep(600)")
    assert child.start() == "ready pid=1"
    assert child.alive()
    assert child.stop() == -15  # SIGTERM
    assert child.stop() is None  # a second stop is harmless
    log = (tmp_path / "child.log").read_text()
    assert "noise" in log and "ready pid=1" in log


def test_an_exit_before_ready_names_the_code_and_the_log(tmp_path):
    child = _child(tmp_path, "import sys; print('starting'); sys.exit(3)")
    with pytest.raises(ChildStartError, match=r"child exited with 3 before it was ready; see .*child\.log"):
        child.start()
    assert not child.alive()


def test_silence_past_the_timeout_stops_the_child(tmp_path):
    child = _child(tmp_path, "import time; time.sleep(600)", timeout_s=1.0)
    with pytest.raises(ChildStartError, match="not ready after"):
        child.start()
    assert not child.alive()
