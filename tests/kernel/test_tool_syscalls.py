"""Tools through the syscall path with the built-in MCP servers as real processes: listing and calling, the
calculator, the files tool acting on the caller's own space, restricted tools needing a grant, and irreversible
calls held for the operator (approved, denied, timed out), every decision audited."""

import json
import os
import shutil
import tempfile
import threading
import time

import pytest

from kernel.context.tool_retention import ToolAwareRetention
from sdk import KernelError, connect
from tests.kernel.harness import InProcessKernel, wait_until
from tests.tools.reachable import needs_sandbox_reach


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tools-kernel")
    with InProcessKernel(
        f"ipc://{directory}/kernel.sock", services=True, tools="default", approval_timeout_s=3.0
    ) as running:
        yield running


@needs_sandbox_reach()
def test_agents_list_and_call_tools(kernel):
    with connect(kernel.address, name="user") as k:
        names = {t.name for t in k.tools.list()}
        assert {"calculate", "read_file", "write_file", "search_memory"} <= names
        assert "run_python" not in names  # restricted: runs code
        assert k.tools.call("calculate", {"expression": "17 * 23 + 4"}).text.strip() == "395"
        with pytest.raises(KernelError) as bad:
            k.tools.call("calculate", {"expression": 42})  # fails the schema: refused before running
        assert bad.value.code == "bad_request"
        with pytest.raises(KernelError) as restricted:
            k.tools.call("run_python", {"code": "print(1)"})
        assert restricted.value.code == "permission_denied"


@needs_sandbox_reach()
def test_a_grant_opens_a_restricted_tool(kernel):
    with connect(kernel.address, token=kernel.admin_token) as operator:
        token = operator.grant(["tool:run_python"])
    with connect(kernel.address, name="coder", token=token) as coder:
        assert "run_python" in {t.name for t in coder.tools.list()}
        assert "42" in coder.tools.call("run_python", {"code": "print(6 * 7)"}).text


@needs_sandbox_reach()
def test_run_python_sees_nothing_of_this_kernels_runtime_and_data_directories():
    """Not the default paths: the kernel's own, wherever its options put them. The runtime directory here is
    world-readable (an operator's choice the kernel does not re-mode), so only the sandbox's view keeps it out."""
    runtime = tempfile.mkdtemp(prefix="aios-open-runtime-")
    os.chmod(runtime, 0o755)
    try:
        with InProcessKernel(f"ipc://{runtime}/kernel.sock", services=True, tools="default") as kernel:
            with connect(kernel.address, token=kernel.admin_token) as operator:
                token = operator.grant(["tool:run_python"])
            code = (
                f"import os\nfor d in ({runtime!r}, {kernel.data_dir!r}):\n    try:\n"
                f"        print(d, sorted(os.listdir(d)))\n    except OSError as e:\n"
                f"        print(d, 'refused', e.errno)\n"
            )
            with connect(kernel.address, name="coder", token=token) as coder:
                seen = coder.tools.call("run_python", {"code": code}).text
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
    assert f"{runtime} " in seen and f"{kernel.data_dir} " in seen  # the snippet ran
    for name in ("kernel.sock", "admin.token", "audit.jsonl", "files", "memory", "shares.json"):
        assert name not in seen.replace(runtime, "").replace(kernel.data_dir, "")


def test_the_files_tool_acts_on_the_callers_own_space(kernel):
    with connect(kernel.address, name="reader-agent") as k:
        k.fs.write("notes/hello.txt", "hello from my space")
        assert "hello from my space" in k.tools.call("read_file", {"path": "notes/hello.txt"}).text
    with connect(kernel.address, name="someone-else") as other:
        assert "hello from my space" not in other.tools.call("read_file", {"path": "notes/hello.txt"}).text


def test_an_ephemeral_agents_files_tool_acts_on_its_throwaway_space(kernel):
    with connect(kernel.address, name="scratch", ephemeral=True) as k:
        k.fs.write("draft.txt", "throwaway words")
        assert "throwaway words" in k.tools.call("read_file", {"path": "draft.txt"}).text
        assert "draft.txt" in k.tools.call("list_files", {}).text
    with connect(kernel.address, name="scratch", ephemeral=True) as again:  # a new throwaway space
        assert "throwaway words" not in again.tools.call("read_file", {"path": "draft.txt"}).text


def _call_in_thread(address, name, arguments, outcome):
    def run():
        try:
            with connect(address, name="writer-agent") as k:
                outcome["output"] = k.tools.call(name, arguments)
        except KernelError as error:
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("decision", ["approve", "deny", "timeout"])
def test_irreversible_calls_wait_for_the_operator(kernel, decision):
    outcome = {}
    thread = _call_in_thread(kernel.address, "write_file", {"path": f"{decision}.txt", "content": "x"}, outcome)
    with connect(kernel.address, token=kernel.admin_token) as operator:
        held = wait_until(
            lambda: [p for p in operator.tools.pending() if f"{decision}.txt" in p.arguments],
            what="the call held for approval",
        )[0]
        assert held.tool == "write_file" and held.agent_name == "writer-agent"
        if decision != "timeout":
            operator.tools.approve(held.approval_id, allow=decision == "approve")
        thread.join(120)
    if decision == "approve":
        assert "output" in outcome and not outcome["output"].is_error
    else:
        assert outcome["error"].code == "permission_denied"
    decisions = [d for d in kernel.audit_records() if held.approval_id in json.dumps(d)]
    assert [d["decision"] for d in decisions] == ["allow" if decision == "approve" else "deny"]


@needs_sandbox_reach()
def test_a_tool_call_tells_the_retention_policy_when_its_agent_waits_and_returns(tmp_path):
    """--retention tool-aware: the kernel runs the tool, so the context manager hears its start and end (and learns
    the tool's latency) without the agent saying anything."""
    policy = ToolAwareRetention(clock=time.monotonic)
    with InProcessKernel(
        f"ipc://{tmp_path}/kernel.sock", services=True, tools="default", retention_policy=policy
    ) as kernel:
        assert policy.latency.expected("calculate") == policy.latency.prior_s
        with connect(kernel.address, name="asker") as k:
            assert k.tools.call("calculate", {"expression": "6 * 7"}).text.strip() == "42"
            wait_until(
                lambda: policy.latency.expected("calculate") != policy.latency.prior_s,
                timeout_s=60,
                what="the tool's latency observed",
            )
