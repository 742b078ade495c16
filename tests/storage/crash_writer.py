"""Child process of the crash test: writes versions in a loop forever and prints "path version sha256" after each
write() returns, so every printed line is an acknowledged write. Content is a pure function of (path, version)
(`content`), so the parent can check any version it finds, acknowledged or not, for tearing.

    python -m tests.storage.crash_writer ROOT [CALL:N]

With CALL:N (CALL one of write, fsync, rename, unlink) the writer SIGKILLs itself at the Nth such os call made by the
store, before making it, except for write, where it first writes half the buffer: a torn temporary. That puts the
kill at an exact step of an atomic write (data half written, written but not fsync'd, fsync'd but not renamed, renamed
but the directory not fsync'd, old versions half pruned), which an outside kill only hits by chance.
"""

import hashlib
import os
import random
import signal
import sys

from ipc.errors import ProtocolError
from kernel.storage import StorageManager

SPACE = "uid:1000/crash"
PATHS = ["log", "notes/a", "notes/deep/b"]
KEEP = 4
LIMITS = dict(keep_versions=KEEP, quota_bytes=64 << 20, max_file_bytes=1 << 20, max_files=10)


def content(path: str, version: int) -> bytes:
    seed = hashlib.sha256(f"{path}:{version}".encode()).digest()
    rng = random.Random(seed)
    return seed + rng.randbytes(rng.randrange(0, 512 << 10))  # up to 512 KiB: kills land mid-write


def die_at(call: str, nth: int) -> None:
    """Replace os.<call> in this process so that its nth use kills the process (see the module docstring)."""
    real = getattr(os, call)
    seen = [0]

    def wrapper(*args, **kwargs):
        seen[0] += 1
        if seen[0] == nth:
            if call == "write":
                fd, data = args
                real(fd, bytes(data)[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    setattr(os, call, wrapper)


def main() -> None:
    store = StorageManager(sys.argv[1], **LIMITS)
    if len(sys.argv) > 2:
        call, nth = sys.argv[2].split(":")
        die_at(call, int(nth))
    latest = {}
    for path in PATHS:
        try:
            latest[path] = store.versions(SPACE, path)[-1].version
        except ProtocolError:
            latest[path] = 0
    print("ready", flush=True)
    turn = 0
    path = PATHS[0]
    data = content(path, latest[path] + 1)
    while True:
        latest[path] = store.write(SPACE, path, data)
        line = f"{path} {latest[path]} {hashlib.sha256(data).hexdigest()}"
        turn += 1
        # the next content is made before the ack is printed, so a kill that follows the ack lands in write()
        path = PATHS[turn % len(PATHS)]
        data = content(path, latest[path] + 1)
        print(line, flush=True)


if __name__ == "__main__":
    main()
