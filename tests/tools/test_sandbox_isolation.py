"""A run_python snippet has no more privilege than an agent: through the real ToolManager and python server, it cannot
read root's or the kernel's files, see the runtime and data directories the manager hides, reach a unix socket there,
write outside its directory, see the kernel's processes, or hold any root; the other sandboxed servers still work.
Real processes, sockets and files; run as root here (and in CI)."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.tools import ToolManager, ToolsConfig, load_config
from kernel.tools.config import HIDE_ENV, default_hidden_paths, parse_config
from kernel.tools.sandbox import CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER, SandboxLimits, launcher_argv
from tests.tools.helpers import WAIT_S, misc_server, process_tree, result
from tests.tools.reachable import needs_sandbox_reach, skip_unless_sandbox_reaches

ROOT = os.getuid() == 0


def _can_unshare(flags: int) -> bool:
    pid = os.fork()
    if pid == 0:
        os._exit(ctypes.CDLL(None, use_errno=True).unshare(flags) != 0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


JAIL = _can_unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | (0 if ROOT else CLONE_NEWUSER))
needs_jail = pytest.mark.skipif(not JAIL, reason="no mount/PID/network namespaces here: paths are not hidden")
needs_root = pytest.mark.skipif(not ROOT, reason="as a normal user the sandbox keeps the kernel's uid (by design)")


@pytest.fixture(scope="module")
def kernel_dirs():
    """A kernel-like runtime dir (0700: admin token 0600, a listening unix socket), a data dir with another agent's
    file, and a 0600 file of the kernel's uid in an open (0755) directory that is not hidden."""
    base = tempfile.mkdtemp(prefix="aios-isolation-")
    os.chmod(base, 0o755)
    runtime, data, open_dir = (os.path.join(base, name) for name in ("run", "data", "open"))
    os.mkdir(runtime, 0o700)
    os.makedirs(os.path.join(data, "files", "uid:0", "other"), mode=0o700)
    os.mkdir(open_dir, 0o755)
    for path in (
        os.path.join(runtime, "admin.token"),
        os.path.join(data, "files", "uid:0", "other", "secret.txt"),
        os.path.join(open_dir, "private.txt"),
    ):
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as file:
            file.write("kernel-secret")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(os.path.join(runtime, "kernel.sock"))
    os.chmod(os.path.join(runtime, "kernel.sock"), 0o777)  # only hiding may keep a snippet out
    listener.listen(8)
    try:
        yield {"runtime": runtime, "data": data, "open": open_dir, "base": base}
    finally:
        listener.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def manager(kernel_dirs):
    skip_unless_sandbox_reaches()
    builtin = load_config(None)
    config = ToolsConfig(
        servers=[builtin.server("calculator"), builtin.server("python"), misc_server("boxed", sandbox=True)],
        hide=[kernel_dirs["runtime"], kernel_dirs["data"]],
    )
    manager = ToolManager(config)
    try:
        assert manager.start(timeout=WAIT_S) == {}
        yield manager
    finally:
        manager.stop()


def probe(manager, code: str) -> dict:
    """Run a snippet whose last stdout line is JSON; that JSON."""
    out = result(manager.call("run_python", {"code": code, "timeout": 20}, {}))
    assert not out.is_error, out.text
    return json.loads(out.text.split("--- stdout ---\n")[1].split("\n--- stderr")[0].strip().splitlines()[-1])


ATTEMPT = """
import json, os, socket
def attempt(action):
    try:
        return ["done", repr(action())[:200]]
    except Exception as error:
        return ["failed", type(error).__name__]
"""


def _host_status(pid: int) -> dict[str, list[str]]:
    with open(f"/proc/{pid}/status") as status:
        return {
            line.split(":")[0]: line.split()[1:]
            for line in status
            if line.split(":")[0] in ("Uid", "Gid", "Groups", "CapEff", "CapPrm")
        }


@needs_root
def test_host_sees_no_root_anywhere_in_the_python_sandbox(manager):
    """From inside, an unmapped uid looks like 65534 even when it is 0 on the host: so look from the host."""
    marker = "aios-isolation-hold"
    future = manager.call(
        "run_python",
        {
            "code": f"import os, time  # {marker}\n"
            "while not os.path.exists('release'):\n    time.sleep(0.02)\n"
            "print('released')",
            "timeout": 30,
        },
        {},
    )
    launcher = manager._servers["python"]._run.pipes.process.pid
    snippet, deadline = None, time.monotonic() + WAIT_S
    while snippet is None and time.monotonic() < deadline and not future.done():
        for pid in process_tree(launcher):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    if marker.encode() in cmdline.read() and b"sandbox.py" not in cmdline.read():
                        snippet = pid
            except OSError:
                continue
        time.sleep(0.02)  # polling the host's /proc until the snippet shows up, bounded by the deadline
    assert snippet is not None, "the snippet never appeared"
    statuses = {pid: _host_status(pid) for pid in process_tree(launcher)}
    with open(f"/proc/{snippet}/cwd/release", "w"):
        pass
    assert "released" in result(future).text
    assert snippet in statuses and len(statuses) >= 4  # launcher, jail init, server, snippet at least
    for pid, status in statuses.items():
        assert "0" not in status["Uid"] and "0" not in status["Gid"] and status["Groups"] == [], (pid, status)
        assert int(status["CapEff"][0], 16) == 0 and int(status["CapPrm"][0], 16) == 0, (pid, status)


@needs_root
@needs_jail
def test_snippet_holds_no_root(manager):
    seen = probe(
        manager,
        ATTEMPT
        + """
caps = {line.split(":")[0]: int(line.split()[1], 16) for line in open("/proc/self/status") if line.startswith("Cap")}
print(json.dumps({"uids": os.getresuid(), "gids": os.getresgid(), "groups": os.getgroups(), "caps": caps,
                  "setuid": attempt(lambda: os.setuid(0))}))""",
    )
    assert 0 not in seen["uids"] and 0 not in seen["gids"] and seen["groups"] == []
    assert seen["caps"]["CapEff"] == 0 and seen["caps"]["CapPrm"] == 0
    assert seen["setuid"][0] == "failed"


@needs_root
def test_root_only_files_are_unreadable(manager, kernel_dirs):
    private = os.path.join(kernel_dirs["open"], "private.txt")
    seen = probe(
        manager,
        ATTEMPT
        + f"""
print(json.dumps({{"shadow": attempt(lambda: open("/etc/shadow").read()),
                  "private": attempt(lambda: open({private!r}).read()),
                  "root_home": attempt(lambda: os.listdir(os.path.expanduser("~root")))}}))""",
    )
    assert seen["shadow"][0] == "failed" and seen["private"] == ["failed", "PermissionError"]
    # /root is covered; only the interpreter's tree, bound back, is there
    assert seen["root_home"][0] == "failed" or ".ssh" not in seen["root_home"][1]


@needs_jail
def test_runtime_and_data_dirs_are_hidden(manager, kernel_dirs):
    runtime, data = kernel_dirs["runtime"], kernel_dirs["data"]
    other = os.path.join(data, "files", "uid:0", "other", "secret.txt")
    seen = probe(
        manager,
        ATTEMPT
        + f"""
def connect():
    sock = socket.socket(socket.AF_UNIX)
    sock.connect({os.path.join(runtime, "kernel.sock")!r})
print(json.dumps({{"runtime": attempt(lambda: os.listdir({runtime!r})),
                  "data": attempt(lambda: os.listdir({data!r})),
                  "token": attempt(lambda: open({os.path.join(runtime, "admin.token")!r}).read()),
                  "other": attempt(lambda: open({other!r}).read()),
                  "socket": attempt(connect)}}))""",
    )
    assert seen["runtime"] == ["done", "[]"] and seen["data"] == ["done", "[]"]
    assert seen["token"][0] == seen["other"][0] == seen["socket"][0] == "failed"
    assert "kernel-secret" not in json.dumps(seen)


@needs_jail
def test_writes_only_in_its_own_directory(manager, kernel_dirs):
    name = f"escaped-{uuid.uuid4().hex}"
    seen = probe(
        manager,
        ATTEMPT
        + f"""
def write(path):
    with open(path, "w") as file:
        file.write("x")
    return path
here = os.getcwd()
print(json.dumps({{"own": attempt(lambda: write(os.path.join(here, "mine.txt"))),
                  "outside": [attempt(lambda: write(os.path.join(path, {name!r})))
                              for path in ("/tmp", "/var/tmp", "/dev/shm", {kernel_dirs["open"]!r})]}}))""",
    )
    assert seen["own"][0] == "done"
    assert all(outcome[0] == "failed" for outcome in seen["outside"])
    for directory in ("/tmp", "/var/tmp", "/dev/shm", kernel_dirs["open"]):
        assert not os.path.exists(os.path.join(directory, name))


@needs_jail
def test_kernel_processes_are_out_of_sight(manager):
    me = os.getpid()
    seen = probe(
        manager,
        ATTEMPT
        + f"""
cmdlines = []
for entry in filter(str.isdigit, os.listdir("/proc")):
    try:
        cmdlines.append(open(f"/proc/{{entry}}/cmdline", "rb").read().decode(errors="replace"))
    except OSError:
        pass
print(json.dumps({{"cmdlines": cmdlines, "kill": attempt(lambda: os.kill({me}, 0))}}))""",
    )
    assert seen["cmdlines"] and not any("pytest" in line for line in seen["cmdlines"])
    assert seen["kill"][0] == "failed"


def test_other_sandboxed_servers_still_work(manager):
    assert result(manager.call("calculate", {"expression": "17 * 23 + 4"}, {})).text == "395"
    info = json.loads(result(manager.call("boxed.info", {}, {})).text)
    assert os.path.basename(info["cwd"]).startswith("aios-tool-boxed-")
    if ROOT:  # the private directory is handed to the sandbox uid, still closed to others
        st_dir = os.stat(info["cwd"])
        assert st_dir.st_uid != 0 and stat.S_IMODE(st_dir.st_mode) == 0o700


def test_hidden_paths_default_to_the_kernels_directories(monkeypatch):
    monkeypatch.setenv(HIDE_ENV, os.pathsep.join(["/srv/a", "", "/srv/b"]))
    paths = ToolsConfig(hide=["/srv/first", "/srv/a"]).hidden_paths()
    assert paths[:3] == ("/srv/first", "/srv/a", "/srv/b")
    assert set(default_hidden_paths()) <= set(paths) and len(set(paths)) == len(paths)
    assert parse_config({"sandbox": {"hide": ["/srv/x"]}}).hide == ["/srv/x"]
    for bad in ({"sandbox": {"hide": ["relative"]}}, {"sandbox": {"hid": []}}, {"sandbox": {"hide": "/srv"}}):
        with pytest.raises(ValueError):
            parse_config(bad)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="ab/.", min_size=1, max_size=12), max_size=6))
def test_hidden_paths_are_absolute_unique_and_keep_every_given_path(extra):
    paths = ToolsConfig(hide=["/" + path for path in extra]).hidden_paths()
    assert all(os.path.isabs(path) for path in paths) and len(set(paths)) == len(paths)
    assert {os.path.abspath("/" + path) for path in extra} <= set(paths)


SYSTEM_PYTHON = "/usr/bin/python3"  # stdlib only, readable by any uid (the venv's interpreter is under /root)
SETPRIV = shutil.which("setpriv")


@pytest.mark.skipif(
    not (ROOT and SETPRIV and os.access(SYSTEM_PYTHON, os.X_OK)),
    reason="needs root, setpriv and a system python to play a kernel that runs as a normal user",
)
@needs_sandbox_reach()
def test_as_a_normal_user_the_kernels_own_secrets_and_processes_are_out_of_reach(tmp_path):
    """The non-root path: the launcher run as uid 65534 (the "kernel" user here) with its own 0600 token beside a
    listening socket; the jail keeps that uid, so only the user, mount and PID namespaces can keep it out."""
    user = 65534
    base = tempfile.mkdtemp(prefix="aios-isolation-user-")
    try:
        runtime, work = os.path.join(base, "run"), os.path.join(base, "work")
        os.mkdir(runtime, 0o700)
        os.mkdir(work, 0o700)
        with open(os.open(os.path.join(runtime, "admin.token"), os.O_WRONLY | os.O_CREAT, 0o600), "w") as file:
            file.write("kernel-secret")
        for path in (base, runtime, work, os.path.join(runtime, "admin.token")):
            os.chown(path, user, user)
        os.chmod(base, 0o755)
        # a process of the same uid outside the jail: the "kernel" the snippet would like to signal
        kernel = subprocess.Popen(
            [
                SETPRIV,
                f"--reuid={user}",
                f"--regid={user}",
                "--clear-groups",
                SYSTEM_PYTHON,
                "-c",
                "import sys; sys.stdin.read()",
            ],
            stdin=subprocess.PIPE,
        )
        code = (
            ATTEMPT
            + f"""
print(json.dumps({{"uid": os.getuid(), "token": attempt(lambda: open({os.path.join(runtime, "admin.token")!r}).read()),
                  "runtime": attempt(lambda: os.listdir({runtime!r})),
                  "kill": attempt(lambda: os.kill({kernel.pid}, 0)),
                  "outside": attempt(lambda: open({os.path.join(base, "escaped")!r}, "w"))}}))"""
        )
        limits = SandboxLimits(uid=user)
        argv = launcher_argv(limits, work, [SYSTEM_PYTHON, "-I", "-c", code], hide=(runtime,))
        argv[0] = SYSTEM_PYTHON
        done = subprocess.run(
            [SETPRIV, f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv],
            cwd="/",
            capture_output=True,
            text=True,
            timeout=WAIT_S,
            env={"PATH": os.defpath},
        )
        kernel.communicate(b"", timeout=WAIT_S)
        if "unshare(mount and PID namespaces) failed" in done.stderr:
            pytest.skip(f"no user namespaces for a normal user here: {done.stderr.strip()}")
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout.strip().splitlines()[-1])
        assert seen["uid"] == user  # same uid as the "kernel": only hiding protects
        assert seen["token"][0] == "failed" and seen["runtime"] == ["done", "[]"]
        assert seen["kill"][0] == "failed" and seen["outside"][0] == "failed"
        assert not os.path.exists(os.path.join(base, "escaped"))
    finally:
        shutil.rmtree(base, ignore_errors=True)
