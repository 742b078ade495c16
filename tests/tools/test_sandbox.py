"""The sandbox as the built-in servers use it: the python runner's snippets meet its limits, and the manager, the
runner and the other tools keep working after each attempt. Real processes throughout."""

from __future__ import annotations

import ctypes
import json
import os

import pytest

from kernel.tools import ToolManager, ToolsConfig, load_config
from kernel.tools.sandbox import CLONE_NEWNET, CLONE_NEWUSER
from tests.tools.helpers import WAIT_S, misc_server, result
from tests.tools.reachable import skip_unless_sandbox_reaches


def _namespaces_available() -> bool:
    pid = os.fork()
    if pid == 0:
        os._exit(ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


NAMESPACES = _namespaces_available()


@pytest.fixture(scope="module")
def manager():
    skip_unless_sandbox_reaches()
    os.environ["AIOS_TOKEN"] = "kernel-secret"
    builtin = load_config(None)
    config = ToolsConfig(
        servers=[builtin.server("calculator"), builtin.server("python"), misc_server("boxed", sandbox=True)]
    )
    manager = ToolManager(config)
    try:
        assert manager.start(timeout=WAIT_S) == {}
        yield manager
    finally:
        manager.stop()
        del os.environ["AIOS_TOKEN"]


def run(manager, code: str, timeout: float = 10):
    return result(manager.call("run_python", {"code": code, "timeout": timeout}, {}))


def still_fine(manager):
    assert result(manager.call("calculate", {"expression": "17 * 23 + 4"}, {})).text == "395"
    assert "hello" in run(manager, "print('hello')").text


def test_runner_returns_output_and_exit_code(manager):
    out = run(manager, "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)")
    assert out.is_error and "exit code: 3" in out.text and "out" in out.text and "err" in out.text


@pytest.mark.skipif(not NAMESPACES, reason="no unprivileged user+network namespaces here")
def test_fork_budget_holds_as_root_too(manager):
    code = (
        "import os, time\nn = 0\ntry:\n    while n < 10000:\n        if os.fork() == 0:\n"
        "            time.sleep(60); os._exit(0)\n        n += 1\nexcept OSError as e:\n"
        "    print('forks', n, e.errno)\n"
    )
    out = run(manager, code)
    forks = int(out.text.split("forks ")[1].split()[0])
    assert 0 < forks < 128  # the server's task budget (processes = 128), not 10000
    still_fine(manager)


def test_fork_bomb_is_killed_and_everything_recovers(manager):
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    out = run(manager, bomb, timeout=3)
    assert out.is_error and "timed out" in out.text
    still_fine(manager)


def test_ten_gigabyte_allocation_fails(manager):
    out = run(manager, "x = bytearray(10 * 1024 ** 3)\nprint('allocated')")
    assert out.is_error and "MemoryError" in out.text and "allocated" not in out.text.split("--- stderr")[0]
    still_fine(manager)


def test_cpu_time_is_bounded(manager):
    out = run(manager, "while True: pass", timeout=2)
    assert out.is_error
    still_fine(manager)


def test_huge_print_is_bounded(manager):
    out = run(manager, "print('y' * 100_000_000)")
    assert "more bytes dropped" in out.text and len(out.text) < 70_000


@pytest.mark.skipif(not NAMESPACES, reason="no unprivileged user+network namespaces here")
def test_no_network(manager):
    out = run(manager, "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=5)")
    assert out.is_error and "Network is unreachable" in out.text
    assert "lo" in run(manager, "import socket; print(socket.if_nameindex())").text  # only a loopback exists


def test_snippet_environment_and_directory(manager):
    out = run(manager, "import os, json; print(json.dumps([sorted(os.environ), os.getcwd()]))")
    names, cwd = json.loads(out.text.split("--- stdout ---\n")[1].split("\n--- stderr")[0])
    assert names == ["HOME", "LANG", "PATH"]
    assert "aios-tool-python-" in cwd and "snippet-" in cwd


def test_sandboxed_server_has_private_directory_and_no_secrets(manager):
    info = json.loads(result(manager.call("boxed.info", {}, {})).text)
    assert "AIOS_TOKEN" not in info["env"]
    assert os.path.basename(info["cwd"]).startswith("aios-tool-boxed-") and info["env"]["HOME"] == info["cwd"]
    assert oct(os.stat(info["cwd"]).st_mode & 0o777) == "0o700"
