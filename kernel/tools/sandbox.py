"""Confinement for tool servers that run code: a launcher that sets limits on itself, then execs the server.

Parent side (the manager): `launcher_argv(limits, workdir, argv)` wraps a command; `make_workdir()` /
`remove_workdir()` give each sandboxed server a private temporary directory; `build_env()` makes an environment from an
allowlist only. The manager spawns the result in a new session (process group), so stop() kills the whole tree.

Child side: `python -I kernel/tools/sandbox.py [options] -- argv...` (run by path, stdlib only, so it works before
anything else is importable and costs one interpreter start). In order:
1. as root: real uid → the sandbox uid (`--uid`, default 65534), effective uid stays 0 so the interpreter under
   /root stays readable. RLIMIT_NPROC is never enforced for real uid 0, so this is what makes it count;
2. `unshare(CLONE_NEWUSER | CLONE_NEWNET)` (ctypes: os.unshare is 3.12+). In a user namespace of its own the process
   has no capability over the host (so RLIMIT_NPROC holds, CAP_SYS_RESOURCE cannot lift it), the process count is kept
   per namespace (so the limit is per sandbox, not per uid system-wide), and the new network namespace has only a
   down loopback: no network at all. If unshare fails, a note goes to stderr and the launcher carries on: with root it
   tries CLONE_NEWNET alone; without root, RLIMIT_NPROC is set to the uid's current count plus the budget;
3. rlimits (after the unshare, so the namespace's parent-level cap stays the host's): RLIMIT_CPU (seconds, SIGXCPU
   then SIGKILL), RLIMIT_AS (address space: a 10 GB allocation fails with MemoryError), RLIMIT_NOFILE, RLIMIT_NPROC
   (tasks, i.e. threads too), RLIMIT_FSIZE, RLIMIT_CORE = 0;
4. chdir to the private directory, umask 077, exec.

What it cannot enforce without privileges or cgroups: filesystem reads/writes outside the directory (the process keeps
the kernel's effective uid; the directory is a convention, not a jail), memory as resident set (RLIMIT_AS bounds
address space per process, not the tree's sum), total CPU of the tree (RLIMIT_CPU is per process), and processes
that call setsid() escape the process-group kill (their fork budget still holds).
`--nested` skips 1 and 2: the python runner uses it for each snippet, which inherits the server's namespaces.
"""
from __future__ import annotations

import ctypes
import os
import resource
import shutil
import sys
import tempfile
from dataclasses import dataclass

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
NOBODY_UID = 65534
# What a sandboxed server's environment is made from; everything else of the kernel's is dropped.
BASE_ENV = ("PATH", "LANG", "LC_ALL")


@dataclass(frozen=True)
class SandboxLimits:
    cpu_seconds: int | None = 600       # per process; a runaway server is killed and restarted on the next call
    memory_mb: int | None = 2048        # address space per process
    open_files: int | None = 256
    processes: int | None = 128         # tasks (processes and threads) in the sandbox
    file_size_mb: int | None = 64
    network: bool = False
    uid: int = NOBODY_UID               # real uid when the kernel runs as root


def launcher_argv(limits: SandboxLimits, workdir: str, argv: list[str], nested: bool = False) -> list[str]:
    """argv wrapped by the launcher (this file, run by path with the same interpreter)."""
    options = [f"--cwd={workdir}", f"--uid={limits.uid}"]
    for flag, value in (("--cpu", limits.cpu_seconds), ("--as-mb", limits.memory_mb), ("--nofile", limits.open_files),
                        ("--nproc", limits.processes), ("--fsize-mb", limits.file_size_mb)):
        if value is not None:
            options.append(f"{flag}={int(value)}")
    if not limits.network:
        options.append("--no-network")
    if nested:
        options.append("--nested")
    return [sys.executable, "-I", os.path.abspath(__file__), *options, "--", *argv]


def make_workdir(prefix: str) -> str:
    return tempfile.mkdtemp(prefix=f"aios-tool-{prefix}-")


def remove_workdir(path: str | None) -> None:
    if path:
        shutil.rmtree(path, ignore_errors=True)


def build_env(pass_env: list[str], values: dict[str, str], home: str | None, pythonpath: str | None) -> dict[str, str]:
    """The allowlisted environment: BASE_ENV and pass_env names from ours, then explicit values."""
    env = {name: os.environ[name] for name in (*BASE_ENV, *pass_env) if name in os.environ}
    env.setdefault("PATH", os.defpath)
    if home:
        env["HOME"] = env["TMPDIR"] = home
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    env.update(values)
    return env


# ---------------------------------------------------------------------------------------------------- child side

def _note(text: str) -> None:
    # One line on stderr: the manager keeps a server's last stderr lines and logs them.
    sys.stderr.write(f"aios-sandbox: {text}\n")
    sys.stderr.flush()


def _unshare(flags: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    return 0 if libc.unshare(flags) == 0 else ctypes.get_errno()


def _uid_task_count(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as status:
                    for line in status:
                        if line.startswith("Uid:"):
                            count += int(line.split()[1]) == uid
                            break
            except OSError:
                continue
    return count


def _confine(options: dict[str, str], nested: bool) -> int | None:
    """Steps 1-2; the RLIMIT_NPROC value to set (None: the requested one)."""
    no_network = "no-network" in options
    nproc = int(options["nproc"]) if "nproc" in options else None
    if nested:
        return nproc
    root = os.getuid() == 0
    if root:
        os.setresuid(int(options.get("uid", NOBODY_UID)), 0, 0)
    error = _unshare(CLONE_NEWUSER | (CLONE_NEWNET if no_network else 0))
    if error == 0:
        return nproc
    _note(f"unshare(CLONE_NEWUSER) failed ({os.strerror(error)}): per-sandbox process count not enforced as such")
    if no_network and (not root or _unshare(CLONE_NEWNET) != 0):
        _note("network not cut (no network namespace)")
    if root:
        _note("running with root capabilities: RLIMIT_NPROC is not enforced")
        return nproc
    # Without a namespace the kernel counts every process of our uid against the limit.
    return None if nproc is None else _uid_task_count(os.getuid()) + nproc


def main(args: list[str]) -> None:
    if "--" not in args:
        raise SystemExit("usage: sandbox.py [--option=value ...] -- command ...")
    split = args.index("--")
    options = dict((arg[2:].split("=", 1) + [""])[:2] for arg in args[:split])
    argv = args[split + 1:]
    nproc = _confine(options, nested="nested" in options)
    limits = [(resource.RLIMIT_CORE, 0)]
    for key, which, scale in (("cpu", resource.RLIMIT_CPU, 1), ("as-mb", resource.RLIMIT_AS, 1 << 20),
                              ("nofile", resource.RLIMIT_NOFILE, 1), ("fsize-mb", resource.RLIMIT_FSIZE, 1 << 20)):
        if key in options:
            limits.append((which, int(options[key]) * scale))
    if nproc is not None:
        limits.append((resource.RLIMIT_NPROC, nproc))
    for which, value in limits:
        soft, hard = resource.getrlimit(which)
        capped = (lambda v: v) if hard == resource.RLIM_INFINITY else (lambda v: min(v, hard))
        # CPU: a soft limit below the hard one sends SIGXCPU first (catchable), then SIGKILL a second later.
        resource.setrlimit(which, (capped(value), capped(value + 1 if which == resource.RLIMIT_CPU else value)))
    if "cwd" in options:
        os.chdir(options["cwd"])
    os.umask(0o077)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
