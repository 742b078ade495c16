"""Servers that never come up give clear errors without hanging anything; stop() leaves no process behind."""

from __future__ import annotations

import json
import os

from ipc.errors import ErrorCode
from kernel.tools import ServerConfig, ToolManager, ToolsConfig
from tests.tools.helpers import WAIT_S, error_of, misc_server, process_tree, result
from tests.tools.reachable import needs_sandbox_reach


def _alive(pid: int) -> bool:
    """True if the pid exists and is not a zombie (a zombie would mean nobody reaped it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_servers_that_cannot_start_give_clear_errors_and_others_work():
    config = ToolsConfig(
        servers=[
            ServerConfig(name="missing", command=["/nonexistent/tool-server"]),
            ServerConfig(
                name="exits", command=["python", "-c", "import sys; print('no mcp here', file=sys.stderr); sys.exit(2)"]
            ),
            ServerConfig(name="silent", command=["python", "-c", "import time; time.sleep(600)"], startup_timeout=2),
            misc_server(),
        ]
    )
    with ToolManager(config) as manager:
        errors = manager.start(timeout=WAIT_S)
        assert set(errors) == {"missing", "exits", "silent"}
        assert "'missing'" in errors["missing"] and "command not found" in errors["missing"]
        assert "'exits'" in errors["exits"] and "exit code 2" in errors["exits"] and "no mcp here" in errors["exits"]
        assert "closed its connection" in errors["exits"]
        assert "'silent'" in errors["silent"] and "did not start within 2s" in errors["silent"]
        assert {spec.server for spec in manager.list_tools()} == {"misc"}
        assert result(manager.call("strict", {"n": 3}, {})).text == "3"
        for name in ("missing.anything", "exits.anything"):
            error = error_of(manager.call(name, {}, {}))
            assert error.code == ErrorCode.INTERNAL and name.split(".")[0] in error.message
        # An unknown name while servers are down may be theirs: say so rather than "not found".
        error = error_of(manager.call("some_tool", {}, {}))
        assert error.code == ErrorCode.INTERNAL and "down" in error.message


@needs_sandbox_reach()
def test_stop_kills_and_reaps_every_server_process():
    config = ToolsConfig(servers=[misc_server("a"), misc_server("b", sandbox=True)])
    manager = ToolManager(config)
    assert manager.start(timeout=WAIT_S) == {}
    pid = json.loads(result(manager.call("a.info", {}, {})).text)["pid"]
    sandboxed = json.loads(result(manager.call("b.info", {}, {})).text)
    hung = manager.call("a.hang", {}, {})
    boxed = process_tree(manager._servers["b"]._run.pipes.process.pid)  # launcher, jail init, server
    assert _alive(pid) and all(map(_alive, boxed)) and os.path.isdir(sandboxed["cwd"])
    manager.stop()
    assert hung.cancelled()
    assert not _alive(pid) and not any(map(_alive, boxed))
    assert not os.path.exists(sandboxed["cwd"]), "the sandbox directory outlived stop()"
    assert error_of(manager.call("a.strict", {"n": 1}, {})).code == ErrorCode.SHUTDOWN
