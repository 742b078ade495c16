"""Confinement for tool servers that run code: a launcher that builds a jail for itself, then execs the server.

Parent side (the manager): `launcher_argv(limits, workdir, argv, hide)` wraps a command; `make_workdir()` /
`remove_workdir()` give each sandboxed server a private temporary directory; `build_env()` makes an environment from an
allowlist only. The manager spawns the result in a new session (process group), so stop() kills the whole tree.

Child side: `python -I kernel/tools/sandbox.py [options] -- argv...` (run by path, stdlib only). The launcher P:
0. as root, refuses what the sandbox uid could not run: a stat walk (kernel/tools/reach.py, no uid switch) of the
   command, its #! interpreter, a python script or -m module and absolute path arguments, in the view step 2 will
   build; the first directory it cannot search (or file it cannot read / execute) is named with its mode, owner and
   the fix on stderr, and P exits EXIT_UNREACHABLE (126) having run nothing: the manager reports that as the
   server's start failure. `reach_problem(argv, limits, hide)` gives the same verdict to the parent (tests skip on
   it); the launcher's own is the one that counts (its import path, hence its view, may differ slightly);
1. unshares a mount, network and PID namespace — as root directly (these namespaces belong to the host's user
   namespace, so nothing in the jail can undo them); as a normal user inside a new user namespace mapping only its own
   uid (so it has CAP_SYS_ADMIN over its mounts and nothing else);
2. builds the view: mounts private; an empty read-only tmpfs over each `--hide` path (the kernel's runtime directory
   with its socket, admin token and audit log; the data directory with every agent's space: a file is covered by
   /dev/null); as root also over each directory on the way to the interpreter, the venv or the project that the
   sandbox uid cannot traverse (/root, 0700), with those trees bound back read-only (so /root/.ssh and the rest stay
   hidden; the directories leading to them recreated 0755 whatever the umask; a tree's own mode still holds); then
   the whole tree read-only (mount_setattr AT_RECURSIVE, Linux 5.12+; before that a note, and places the uid may
   write, such as /tmp, stay writable), except the private directory, bound writable;
3. forks I, pid 1 of the new PID namespace: it mounts a fresh /proc (the kernel and other sandboxes are not even
   visible: no kill, no ptrace, no /proc/<pid>/root), drops to the sandbox uid — as root: setgroups([]) then real,
   effective and saved gid and uid = `--uid` (65534), so no root is left, never setresuid(uid, 0, 0) — then (root)
   unshares a user namespace so the task budget is counted per sandbox, clears its capabilities, and forks S; it reaps
   every orphan (zombies would eat the task budget) and exits with S's status. P waits for I, exits with its status;
4. S sets rlimits: RLIMIT_CPU (SIGXCPU then SIGKILL), RLIMIT_AS, RLIMIT_NOFILE, RLIMIT_NPROC (tasks, counted per user
   namespace), RLIMIT_FSIZE, RLIMIT_CORE = 0; chdir to the private directory, umask 077, exec. execve as a uid that is
   not 0 in its user namespace leaves the server with no capabilities.
Why mounts and not "import as root, then drop": every snippet is a fresh interpreter exec'd by the unprivileged
server, which must be able to open the interpreter; binding the needed trees into the jail serves both at once and
keeps the rest of /root out of view.

Enforced, root with namespaces (this machine, CI): uid/gid 65534 with no groups and no capabilities; no view of the
hidden paths, of anything under untraversable directories but the bound trees, of other processes; no network (a down
loopback; abstract unix sockets are per network namespace); writes only in the private directory (/tmp, /var/tmp,
/dev/shm are read-only: multiprocessing's semaphores do not work); /etc/shadow and other root-only files unreadable
by uid. Normal user with user namespaces: the same, except the uid is the kernel's own (mapped to itself), so files
are protected only by being out of view (the hidden paths) — keep secrets under them; and files readable by that uid
elsewhere remain readable. Without namespaces (a note goes to stderr for each missing one): as root the uid drop still
happens (an interpreter under /root is refused, step 0: fail closed) but the hidden paths, network and other processes
are reachable; as a normal user nothing but the rlimits and the environment holds (RLIMIT_NPROC is then set to the
uid's current count plus the budget). Never enforced: memory as resident set (RLIMIT_AS is per process), the tree's
total CPU (RLIMIT_CPU is per process); processes of one sandbox (a runner's snippets) share its uid and directory.
`--nested` does only step 4: the python runner uses it for each snippet, which inherits the server's jail.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import resource
import shutil
import sys
import tempfile
from dataclasses import dataclass

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NOBODY_UID = 65534
# What a sandboxed server's environment is made from; everything else of the kernel's is dropped.
BASE_ENV = ("PATH", "LANG", "LC_ALL")
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# mount(2) / mount_setattr(2) constants (x86_64 and aarch64 share the syscall number).
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 4096, 16384, 1 << 18
SYS_MOUNT_SETATTR, AT_RECURSIVE, MOUNT_ATTR_RDONLY, AT_FDCWD = 442, 0x8000, 1, -100
EXIT_UNREACHABLE = 126  # the launcher's status when the sandbox uid cannot reach what it must run (as a shell's)


def _load_reach():
    """kernel/tools/reach.py, by path: the launcher runs with -I, where the package may not be importable (or be
    another checkout's)."""
    if __package__:
        from kernel.tools import reach as module

        return module
    spec = importlib.util.spec_from_file_location(
        "aios_sandbox_reach", os.path.join(os.path.dirname(__file__), "reach.py")
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


reach = _load_reach()


@dataclass(frozen=True)
class SandboxLimits:
    cpu_seconds: int | None = 600  # per process; a runaway server is killed and restarted on the next call
    memory_mb: int | None = 2048  # address space per process
    open_files: int | None = 256
    processes: int | None = 128  # tasks (processes and threads) in the sandbox
    file_size_mb: int | None = 64
    network: bool = False
    uid: int = NOBODY_UID  # the sandbox's uid and gid when the kernel runs as root


def launcher_argv(
    limits: SandboxLimits, workdir: str, argv: list[str], nested: bool = False, hide: tuple[str, ...] = ()
) -> list[str]:
    """argv wrapped by the launcher (this file, run by path with the same interpreter)."""
    options = [f"--cwd={workdir}", f"--uid={limits.uid}"]
    for flag, value in (
        ("--cpu", limits.cpu_seconds),
        ("--as-mb", limits.memory_mb),
        ("--nofile", limits.open_files),
        ("--nproc", limits.processes),
        ("--fsize-mb", limits.file_size_mb),
    ):
        if value is not None:
            options.append(f"{flag}={int(value)}")
    if not limits.network:
        options.append("--no-network")
    if nested:
        options.append("--nested")
    if hide:
        options.append(f"--hide={json.dumps([os.path.abspath(path) for path in hide])}")
    return [sys.executable, "-I", os.path.abspath(__file__), *options, "--", *argv]


def reach_problem(
    argv: list[str], limits: SandboxLimits = SandboxLimits(), hide: tuple[str, ...] = (), pythonpath: str = PROJECT_ROOT
):
    """Why the sandbox uid could not run argv (a `reach.Unreachable`, printable), or None: what the launcher checks
    before it starts a server, modelled from here (the launcher's own import path may differ slightly from ours, so
    its verdict is the one that counts). None when the kernel is not root: the server keeps the kernel's uid then."""
    if os.geteuid() != 0:
        return None
    path_env = os.environ.get("PATH", os.defpath)
    view = reach.jail_view(argv, hide, _trees_from(), path_env)
    return reach.first_problem(argv, limits.uid, view, path_env, [pythonpath, *sys.path])


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

_LIBC = ctypes.CDLL(None, use_errno=True)


def _note(text: str) -> None:
    # One line on stderr: the manager keeps a server's last stderr lines and logs them.
    sys.stderr.write(f"aios-sandbox: {text}\n")
    sys.stderr.flush()


def _check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def _unshare(flags: int) -> int:
    return 0 if _LIBC.unshare(flags) == 0 else ctypes.get_errno()


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    encode = lambda text: None if text is None else text.encode()
    _check(
        _LIBC.mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data)),
        f"mount {target}",
    )


def _set_readonly(path: str, readonly: bool, recursive: bool) -> None:
    attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_RDONLY if readonly else 0, 0 if readonly else MOUNT_ATTR_RDONLY, 0, 0)
    _check(
        _LIBC.syscall(
            SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(), AT_RECURSIVE if recursive else 0, attr, ctypes.sizeof(attr)
        ),
        f"mount_setattr {path}",
    )


def _trees_from() -> list[str]:
    """What the jail needs to read: the interpreter (base and venv), its import path, the project."""
    return [sys.base_prefix, sys.prefix, PROJECT_ROOT, os.path.dirname(os.path.realpath(sys.executable)), *sys.path]


def _refuse_unreachable(argv: list[str], options: dict[str, str], view) -> None:
    """As root, before anything is mounted or dropped: exit EXIT_UNREACHABLE, saying why, if the sandbox uid could
    not exec argv in `view` (the manager reports our last stderr lines as the start failure)."""
    path_env = os.environ.get("PATH", os.defpath)
    roots = [*os.environ.get("PYTHONPATH", "").split(os.pathsep), *sys.path]
    problem = reach.first_problem(argv, int(options.get("uid", NOBODY_UID)), view, path_env, roots)
    if problem:
        _note(f"refused: {problem}")
        sys.exit(EXIT_UNREACHABLE)


def _build_view(view, workdir: str | None) -> None:
    """Step 2, inside the new mount namespace: `view` (reach.jail_view) mounted."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    binds = dict.fromkeys(view.bound, False)  # path -> writable
    if workdir:
        binds[os.path.realpath(workdir)] = True
    # Handles on what goes back in, taken before anything is covered (a bind source must be in this namespace).
    handles = {path: os.open(path, os.O_PATH) for path in sorted(binds)}
    for cover in view.covers:
        if os.path.isdir(cover):
            _mount("aios-hidden", cover, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=64k")
        else:
            _mount("/dev/null", cover, None, MS_BIND)
    # The directories leading to a bound tree are recreated for the uid to search whatever the kernel's umask.
    umask = os.umask(0o022)
    try:
        for path in handles:
            os.makedirs(path, exist_ok=True)
    finally:
        os.umask(umask)
    for path, handle in handles.items():
        _mount(f"/proc/self/fd/{handle}", path, None, MS_BIND | (0 if binds[path] else MS_REC))
        os.close(handle)
    try:
        _set_readonly("/", True, recursive=True)
        for path in (path for path, writable in binds.items() if writable):
            _set_readonly(path, False, recursive=False)
    except OSError as error:
        _note(f"{error}: the file system stays writable where the uid may write")


def _drop(uid: int) -> None:
    """No root left: groups, then gid, then uid (real, effective, saved); a uid of 0 is refused."""
    if uid == 0:
        raise SystemExit("aios-sandbox: refusing to run a sandbox as uid 0")
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def _clear_capabilities() -> None:
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    _check(_LIBC.capset(header, (ctypes.c_uint32 * 6)()), "capset")


def _enter_namespaces(options: dict[str, str], argv: list[str]) -> tuple[bool, int | None]:
    """Steps 1-2: (whether children of this process start a new PID namespace, the RLIMIT_NPROC value to set)."""
    nproc = int(options["nproc"]) if "nproc" in options else None
    net = CLONE_NEWNET if "no-network" in options else 0
    hide, workdir = json.loads(options.get("hide", "[]")), options.get("cwd")
    root, uid, gid = os.getuid() == 0, os.getuid(), os.getgid()
    # One view for the check and the mounts (as root, the trees under untraversable directories are bound back)
    view = reach.jail_view(argv, hide, _trees_from() if root else None, os.environ.get("PATH"))
    if root:
        _refuse_unreachable(argv, options, view)
    if root and workdir:
        sandbox_uid = int(options.get("uid", NOBODY_UID))
        os.chown(workdir, sandbox_uid, sandbox_uid)
    error = _unshare(CLONE_NEWNS | CLONE_NEWPID | net | (0 if root else CLONE_NEWUSER))
    if error == 0:
        if not root:  # map only ourselves: our files keep their owner and we hold no other uid
            for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
                with open(f"/proc/self/{name}", "w") as file:
                    file.write(text)
        _build_view(view, workdir)
        return True, nproc
    _note(
        f"unshare(mount and PID namespaces) failed ({os.strerror(error)}): the hidden paths and other processes "
        f"stay reachable"
    )
    if root:  # no jail: the host's modes hold everywhere
        _refuse_unreachable(argv, options, reach.JailView())
    if not root and _unshare(CLONE_NEWUSER | net) == 0:
        return False, nproc  # tasks counted per namespace; network cut
    if net and (not root or _unshare(net) != 0):
        _note("network not cut (no network namespace)")
    if root or nproc is None:
        return False, nproc
    # Without a user namespace the kernel counts every process of our uid against the limit.
    return False, _uid_task_count(uid) + nproc


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


def _wait_exit(pid: int) -> None:
    """Reap until `pid` ends (as pid 1, every orphan of the namespace is ours to reap), then exit with its status."""
    while True:
        try:
            done, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(1)
        if done == pid:
            code = os.waitstatus_to_exitcode(status)
            os._exit(code if code >= 0 else 128 - code)


def _init(options: dict[str, str], new_pid_ns: bool) -> None:
    """Step 3 in I (or in P itself without a PID namespace): /proc, drop privileges, count tasks per sandbox."""
    if new_pid_ns:
        try:
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)
        except OSError as error:
            _note(f"{error}: /proc hidden instead")
            _mount("aios-hidden", "/proc", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "size=4k")
    if os.getuid() == 0:
        _drop(int(options.get("uid", NOBODY_UID)))
        error = _unshare(CLONE_NEWUSER)
        if error:
            _note(f"unshare(CLONE_NEWUSER) failed ({os.strerror(error)}): RLIMIT_NPROC counts the uid system-wide")
    _clear_capabilities()


def _set_limits(options: dict[str, str], nproc: int | None) -> None:
    limits = [(resource.RLIMIT_CORE, 0)]
    for key, which, scale in (
        ("cpu", resource.RLIMIT_CPU, 1),
        ("as-mb", resource.RLIMIT_AS, 1 << 20),
        ("nofile", resource.RLIMIT_NOFILE, 1),
        ("fsize-mb", resource.RLIMIT_FSIZE, 1 << 20),
    ):
        if key in options:
            limits.append((which, int(options[key]) * scale))
    if nproc is not None:
        limits.append((resource.RLIMIT_NPROC, nproc))
    for which, value in limits:
        soft, hard = resource.getrlimit(which)
        capped = (lambda v: v) if hard == resource.RLIM_INFINITY else (lambda v, hard=hard: min(v, hard))
        # CPU: a soft limit below the hard one sends SIGXCPU first (catchable), then SIGKILL a second later.
        resource.setrlimit(which, (capped(value), capped(value + 1 if which == resource.RLIMIT_CPU else value)))


def main(args: list[str]) -> None:
    if "--" not in args:
        raise SystemExit("usage: sandbox.py [--option=value ...] -- command ...")
    split = args.index("--")
    options = dict((arg[2:].split("=", 1) + [""])[:2] for arg in args[:split])
    argv = args[split + 1 :]
    nproc = int(options["nproc"]) if "nproc" in options else None
    if "nested" not in options:
        new_pid_ns, nproc = _enter_namespaces(options, argv)
        if new_pid_ns:
            init = os.fork()
            if init:  # P: outside the jail, unprivileged too, only waits
                if os.getuid() == 0:
                    _drop(int(options.get("uid", NOBODY_UID)))
                _wait_exit(init)
        _init(options, new_pid_ns)
        if new_pid_ns:
            server = os.fork()
            if server:  # I: pid 1 of the jail, reaps its orphans
                _wait_exit(server)
    _set_limits(options, nproc)
    if "cwd" in options:
        os.chdir(options["cwd"])
    os.umask(0o077)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
