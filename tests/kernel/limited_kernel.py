"""A kernel process for the connection-limit tests: the real I/O thread, loop and sockets around a FakeEngine, in a
process of its own whose descriptor limit the test sets (preexec_fn), so running out of descriptors costs this process
only. Usage: python -m tests.kernel.limited_kernel ADDRESS HELLO_TIMEOUT_S [--raise] [--per-principal N].
Prints one JSON line when serving (pid, admin token path, budget), then obeys stdin: "ballast N" holds N more
descriptors (open /dev/null), "release" closes them, each answered "ok"; end of input stops it."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import threading

import zmq

from kernel.access.audit import AuditLog
from kernel.access.tokens import TokenRegistry
from kernel.context.manager import ContextManager
from kernel.daemon.dispatch import AccessPolicy
from kernel.daemon.inbound import Inbox
from kernel.daemon.io_thread import SocketServer
from kernel.daemon.limits import ConnectionBudget, raise_fd_limit
from kernel.daemon.loop import KernelLoop
from kernel.daemon.preprocess import PromptPreparer
from kernel.replies import Outbox
from kernel.scheduler.registry import make_scheduler
from tests.kernel.fake_engine import FakeEngine


def main(argv: list[str]) -> None:
    address, hello_timeout_s = argv[0], float(argv[1])
    per_principal = int(argv[argv.index("--per-principal") + 1]) if "--per-principal" in argv else None
    if "--raise" in argv:  # as aiosd does first thing
        raise_fd_limit()
    budget = ConnectionBudget.for_process(hello_timeout_s=hello_timeout_s, max_connections_per_principal=per_principal)
    directory = tempfile.mkdtemp(prefix="aios-limits-")
    engine = FakeEngine()
    context = zmq.Context()
    inbox = Inbox()
    access = AccessPolicy(
        tokens=TokenRegistry(os.path.join(directory, "admin.token")),
        audit=AuditLog(os.path.join(directory, "audit.jsonl")),
        allowed_uids=frozenset([os.getuid()]),
        budget=budget,
    )
    server = SocketServer(context, address, inbox, prepare=PromptPreparer(engine), budget=budget)
    kv = ContextManager(engine, arena_bytes=1 << 20, kernel_id=f"{os.getpid()}.limits")
    ready = threading.Event()

    def run_loop():
        outbox = Outbox(context)
        loop = KernelLoop(engine, kv, make_scheduler("fifo"), inbox, outbox, access=access, idle_wait_s=0.05)
        ready.set()
        try:
            loop.run()
        finally:
            outbox.stop_server()

    loop_thread = threading.Thread(target=run_loop, daemon=True)
    server.start()
    loop_thread.start()
    ready.wait(30)
    print(
        json.dumps({"pid": os.getpid(), "admin_token": access.tokens.admin_token_path, **dataclasses.asdict(budget)}),
        flush=True,
    )
    ballast: list[int] = []
    for line in sys.stdin:
        command = line.split()
        if command[:1] == ["ballast"]:
            ballast += [os.open(os.devnull, os.O_RDONLY) for _ in range(int(command[1]))]
        elif command[:1] == ["release"]:
            for fd in ballast:
                os.close(fd)
            ballast.clear()
        print("ok", flush=True)
    inbox.put_stop()
    loop_thread.join(30)
    server.join(30)
    kv.close()
    access.tokens.close()
    access.audit.close()
    context.term()


if __name__ == "__main__":
    main(sys.argv[1:])
