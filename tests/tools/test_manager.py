"""The tool manager against a real MCP server process that misbehaves on purpose (tests/tools/servers/misc.py)."""

from __future__ import annotations

import json
import os

import pytest

from ipc.errors import ErrorCode
from kernel.tools import ToolManager, ToolsConfig
from kernel.tools.server import TIMEOUT_CODE
from tests.tools.helpers import error_of, misc_server, result

CONTEXT = {"space": "uid:0/notes", "agent_id": "a3", "secret": "not for servers"}


@pytest.fixture(scope="module")
def manager():
    os.environ["AIOS_TOKEN"] = "kernel-secret"  # must never reach a server that was not given it
    os.environ["AIOS_TEST_PASSED"] = "passed-through"
    config = ToolsConfig(
        servers=[
            misc_server(
                concurrency=2,
                queue=1,
                tool_timeouts={"hang": 1.0},
                context=["space", "agent_id"],
                pass_env=["AIOS_TEST_PASSED"],
                env={"EXPLICIT": "given"},
            )
        ]
    )
    manager = ToolManager(config)
    try:
        assert manager.start(timeout=120) == {}
        yield manager
    finally:
        manager.stop()
        del os.environ["AIOS_TOKEN"], os.environ["AIOS_TEST_PASSED"]


def test_lists_tools_with_injected_arguments_hidden(manager):
    specs = {spec.name: spec for spec in manager.list_tools()}
    assert {"echo", "strict", "hang", "crash", "big", "block"} <= set(specs)
    assert set(specs["echo"].input_schema["properties"]) == {"text"}
    assert all(spec.server == "misc" and not spec.irreversible for spec in specs.values())


def test_context_is_injected_and_cannot_be_spoofed(manager):
    assert result(manager.call("echo", {"text": "hi"}, CONTEXT)).text == "hi|uid:0/notes|a3"
    error = error_of(manager.call("echo", {"text": "hi", "space": "uid:0/someone-else"}, CONTEXT))
    assert error.code == ErrorCode.BAD_REQUEST and "set by the kernel" in error.message


def test_missing_context_is_an_error_not_a_default(manager):
    error = error_of(manager.call("echo", {"text": "hi"}, {"agent_id": "a3"}))
    assert error.code == ErrorCode.INTERNAL and "space" in error.message


def test_schema_invalid_arguments_never_reach_the_server(manager):
    for bad in ({"n": "5"}, {}, {"n": 1.5}, ["n"]):
        assert error_of(manager.call("strict", bad, CONTEXT)).code == ErrorCode.BAD_REQUEST
    assert json.loads(result(manager.call("seen_calls", {}, CONTEXT)).text) == []
    assert result(manager.call("strict", {"n": 5}, CONTEXT)).text == "5"
    assert json.loads(result(manager.call("seen_calls", {}, CONTEXT)).text) == [5]


def test_unknown_tool(manager):
    assert error_of(manager.call("no_such_tool", {}, CONTEXT)).code == ErrorCode.NOT_FOUND
    assert error_of(manager.call("misc.no_such_tool", {}, CONTEXT)).code == ErrorCode.NOT_FOUND


def test_hanging_tool_times_out_and_others_still_served(manager):
    hung = manager.call("hang", {}, CONTEXT)
    assert result(manager.call("echo", {"text": "meanwhile"}, CONTEXT)).text.startswith("meanwhile")
    error = error_of(hung)
    assert error.code == TIMEOUT_CODE and "timed out" in error.message
    assert result(manager.call("strict", {"n": 7}, CONTEXT)).text == "7"


def test_huge_output_is_truncated(manager):
    out = result(manager.call("big", {"mb": 100}, CONTEXT))
    limit = manager.config.server("misc").max_output_bytes
    assert out.truncated and not out.is_error
    assert 0 < len(out.text.encode()) <= limit and set(out.text) == {"x"}
    small = result(manager.call("big", {"mb": 0}, CONTEXT))
    assert not small.truncated


def test_crashed_server_errors_then_restarts(manager):
    before = json.loads(result(manager.call("info", {}, CONTEXT)).text)["pid"]
    error = error_of(manager.call("crash", {}, CONTEXT))
    assert error.code == ErrorCode.INTERNAL and "crashed" in error.message and "misc" in error.message
    after = json.loads(result(manager.call("info", {}, CONTEXT)).text)["pid"]
    assert after != before
    assert not os.path.exists(f"/proc/{before}"), "the crashed server was not reaped"
    assert result(manager.call("echo", {"text": "back"}, CONTEXT)).text.startswith("back")


def test_concurrency_limit_is_per_tool_with_a_small_queue(manager):
    running = [manager.call("block", {}, CONTEXT) for _ in range(2)]
    queued = manager.call("block", {}, CONTEXT)
    refused = manager.call("block", {}, CONTEXT)
    assert error_of(refused).code == ErrorCode.BUSY
    # Another tool of the same server is not held up by the saturated one.
    assert result(manager.call("echo", {"text": "free"}, CONTEXT)).text.startswith("free")
    assert not any(future.done() for future in (*running, queued))
    assert result(manager.call("release", {}, CONTEXT)).text == "released"
    peaks = [int(result(future).text) for future in (*running, queued)]
    assert max(peaks) == 2  # never three at once in the server


def test_environment_is_an_allowlist(manager):
    env = json.loads(result(manager.call("info", {}, CONTEXT)).text)["env"]
    assert "AIOS_TOKEN" not in env
    assert env["AIOS_TEST_PASSED"] == "passed-through" and env["EXPLICIT"] == "given"
    assert set(env) <= {
        "PATH",
        "LANG",
        "LC_ALL",
        "PYTHONPATH",
        "PYTHONUNBUFFERED",
        "AIOS_TEST_PASSED",
        "EXPLICIT",
        "HOME",
        "TMPDIR",
        "LC_CTYPE",
    }


def test_cancelling_the_future_cancels_the_call(manager):
    hung = manager.call("hang", {}, CONTEXT)
    assert result(manager.call("echo", {"text": "x"}, CONTEXT))  # the hang call has reached the server
    hung.cancel()
    assert result(manager.call("strict", {"n": 1}, CONTEXT)).text == "1"
