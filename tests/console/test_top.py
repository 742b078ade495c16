"""`aios top`: one frame (--once) of a real kernel shows a live agent process by name and its request's state; the
frame draws whatever text agents chose verbatim (rich markup in a name is not interpreted) and copes with fields a
kernel lacks; bad options are refused with a clear message."""

import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from kernel.console.render import frame
from kernel.launch import KernelProcess
from tests.ui.processes import AgentProcess


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("top")
    options = {"dtype": "float32", "kv-budget": 4096, "max-batch": 8, "arena-mb": 64}
    with KernelProcess(f"ipc://{workdir}/kernel.sock", options, workdir / "aiosd.log", ready_timeout_s=900) as kernel:
        yield kernel


def top(address: str, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kernel.cli", "--address", address, "top", *options],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_one_frame_shows_a_live_agent_and_its_request_state(kernel):
    with AgentProcess(kernel.address, "top-watched", "generate", "4000") as agent:
        deadline = time.monotonic() + 300
        while True:
            shown = top(kernel.address, "--once", "--width", "220")
            assert shown.returncode == 0, shown.stderr
            rows = [line.split() for line in shown.stdout.splitlines() if line.strip()]
            agent_rows = [row for row in rows if row[0] == agent.agent_id]
            request_rows = [row for row in rows if row[0].startswith(f"{agent.agent_id}/")]
            if (request_rows and request_rows[0][2] == "running") or time.monotonic() > deadline:
                break
        assert agent_rows and agent_rows[0][1] == "top-watched"
        assert request_rows and request_rows[0][1:3] == [agent.agent_id, "running"]
        assert "tok/s" in shown.stdout and "KV" in shown.stdout


@pytest.mark.parametrize(("options", "message"), [(["--interval", "0"], "--interval"), (["--rows", "0"], "--rows")])
def test_bad_options_are_refused(kernel, options, message):
    refused = top(kernel.address, "--once", *options)
    assert refused.returncode == 2 and message in refused.stderr


@settings(max_examples=50, deadline=None)
@given(name=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40))
def test_agent_text_is_drawn_verbatim(name):
    marked = f"[bold red]{name}[/]"
    snapshot = {
        "agents": [{"agent_id": "a1", "name": marked, "state": "idle"}],
        "approvals": [
            {"approval_id": "p1-1", "agent_id": "a1", "agent_name": marked, "tool": "t", "arguments": marked}
        ],
        "agents_total": 1,
    }
    console = Console(record=True, width=400, color_system=None)
    console.print(frame(snapshot))
    text = console.export_text()
    assert marked.strip() in text


def test_a_frame_of_an_empty_snapshot_draws():
    console = Console(record=True, width=200, color_system=None)
    console.print(frame({}))
    assert "aios top" in console.export_text()
