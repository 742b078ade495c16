"""A victim's service calls beside a flooder, and shutdown with full service queues (issue 17, item 6).

A flooder is one agent that keeps its lane on a service full (`depth` calls pipelined, a new one sent per answer);
the victim, another agent, times its own calls (mem.search, fs.read) and a generation's decode rate, alone and then
beside the flooder. Shutdown: `agents` flooders each fill their memory lane with slow adds, then SIGTERM; the time
until aiosd has exited, and what the queued calls were answered.

    python -m bench.service_fairness [--calls 20] [--depth 64] [--agents 6]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import zmq

from ipc.codec import encode, unpack_reply
from ipc.messages import Hello, Ping
from ipc.service_messages import FsWrite, MemAdd
from kernel.launch import KernelProcess
from sdk import connect

TEXT = "The spare key is under the blue pot near the door. " * 600  # ~31k chars: a slow embedding each
POLL_MS = 100


class Flooder(threading.Thread):
    """An agent keeping `depth` calls of one syscall in flight until stopped; counts the answers by outcome."""

    def __init__(self, address: str, name: str, syscall: str, body, depth: int):
        super().__init__(daemon=True)
        self.address, self.name, self.syscall, self.body, self.depth = address, name, syscall, body, depth
        self.stopping = threading.Event()
        self.outcomes: Counter = Counter()
        self.ready = threading.Event()  # its first `depth` calls are queued in the kernel

    def run(self) -> None:
        context = zmq.Context()
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.address)
        try:
            sock.send(encode("hello", "hello", Hello(name=self.name)))
            assert unpack_reply(sock.recv())["type"] == "result"
            sent = 0
            for _ in range(self.depth):
                sock.send(encode(self.syscall, sent, self.body(sent)))
                sent += 1
            sock.send(encode("kernel.ping", "sync", Ping()))  # answered once the loop queued the calls above
            outstanding = self.depth
            while outstanding and sock.poll(600_000):
                reply = unpack_reply(sock.recv())
                if reply["id"] == "sync":
                    self.ready.set()
                    continue
                outstanding -= 1
                self.outcomes["ok" if reply["type"] == "result" else reply["body"]["code"]] += 1
                if not self.stopping.is_set():
                    sock.send(encode(self.syscall, sent, self.body(sent)))
                    sent += 1
                    outstanding += 1
        finally:
            self.ready.set()
            sock.close()
            context.term()


def timed_calls(call, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def decode_rate(k) -> float:
    done = k.generate("Once upon a time", max_tokens=48, ignore_eos=True, full=True)
    return (done.usage.completion_tokens - 1) / max(1e-9, done.timing.total_s - (done.timing.ttft_s or 0.0))


def victim_rows(address: str, calls: int, depth: int) -> list[tuple]:
    rows = []
    with connect(address, name="victim") as k:
        k.memory.add("Ada lives in Lyon.")
        k.fs.write("notes.txt", "buy milk")
        victims = {
            "mem.search": lambda: k.memory.search("where does Ada live?", k=3),
            "fs.read": lambda: k.fs.read("notes.txt"),
            "decode tok/s": lambda: decode_rate(k),
        }
        floods = {
            "mem.search": ("mem.add", lambda n: MemAdd(text=f"{n} {TEXT}")),
            "fs.read": ("fs.write", lambda n: FsWrite(path=f"f{n % 50}.txt", data=(f"{n} " + TEXT).encode())),
            "decode tok/s": ("mem.add", lambda n: MemAdd(text=f"{n} {TEXT}")),
        }
        for what, call in victims.items():
            alone = timed_calls(call, calls) if what != "decode tok/s" else [call() for _ in range(3)]
            flooder = Flooder(address, f"flooder-{what.split()[0]}", *floods[what], depth)
            flooder.start()
            flooder.ready.wait(600)
            beside = timed_calls(call, calls) if what != "decode tok/s" else [call() for _ in range(3)]
            flooder.stopping.set()
            flooder.join(600)
            rows.append(
                (
                    what,
                    floods[what][0],
                    statistics.median(alone),
                    max(alone),
                    statistics.median(beside),
                    max(beside),
                    dict(flooder.outcomes),
                )
            )
    return rows


def shutdown_row(address: str, kernel: KernelProcess, agents: int, depth: int) -> tuple:
    flooders = [
        Flooder(address, f"flooder{n}", "mem.add", lambda n: MemAdd(text=f"{n} {TEXT}"), depth) for n in range(agents)
    ]
    for flooder in flooders:
        flooder.stopping.set()  # send the first `depth` only: the lanes are full, nothing more follows
        flooder.start()
    for flooder in flooders:
        flooder.ready.wait(600)
    started = time.perf_counter()
    code = kernel.stop()
    exit_s = time.perf_counter() - started
    for flooder in flooders:
        flooder.join(60)
    outcomes = sum((flooder.outcomes for flooder in flooders), Counter())
    return agents * depth, exit_s, code, dict(outcomes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20, help="victim calls timed per row")
    parser.add_argument("--depth", type=int, default=64, help="calls each flooder keeps queued (its lane: 64)")
    parser.add_argument("--agents", type=int, default=6, help="flooders whose queued adds meet the SIGTERM")
    args = parser.parse_args(argv)
    options = {"memory": "on", "storage": "on", "tools": "off"}
    with tempfile.TemporaryDirectory(prefix="aios-fairness-") as workdir:
        address = f"ipc://{workdir}/kernel.sock"
        with KernelProcess(address, options, Path(workdir) / "aiosd.log") as kernel:
            rows = victim_rows(address, args.calls, args.depth)
        print(
            f"{'victim call':<13} {'flooder':<9} {'alone p50':>10} {'alone max':>10} {'flood p50':>10} "
            f"{'flood max':>10}  flooder's answers"
        )
        for what, flood, a50, amax, b50, bmax, outcomes in rows:
            unit = 1.0 if what == "decode tok/s" else 1e3  # tok/s as is, latencies in ms
            print(
                f"{what:<13} {flood:<9} {a50 * unit:>10.1f} {amax * unit:>10.1f} {b50 * unit:>10.1f} "
                f"{bmax * unit:>10.1f}  {outcomes}"
            )
        address = f"ipc://{workdir}/kernel2.sock"
        kernel = KernelProcess(address, options, Path(workdir) / "aiosd2.log")
        kernel.start()
        queued, exit_s, code, outcomes = shutdown_row(address, kernel, args.agents, args.depth)
        print(
            f"shutdown: {queued} mem.adds queued by {args.agents} agents; SIGTERM -> exit {exit_s:.2f} s "
            f"(code {code}); answers {outcomes}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
