"""Hostile frames against a live aiosd: random bytes, random msgpack, envelopes of every syscall with wrong bodies and
valid calls with extreme values, from several connections (some never read their replies).

    python -m bench.fuzz --frames 100000 [--seed N] [--kernel-src PATH]
    python -m bench.fuzz --mode services [--floods fs_write,mem_add,...] [--rounds 3]   (bench/service_flood.py)

Reports frames sent, replies received, answerable frames (a single frame with a readable request id of its own, on a
connection that reads) against those answered, kernel crashes (the process exited, or a health ping got no answer:
the kernel is then restarted and the run goes on), kernel RSS before/after, and a final health check (an SDK chat call
answers). Also home of ObservedKernel, the aiosd child process bench/protection.py uses too.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import zmq

import sdk
from ipc.syscalls import SYSCALLS
from kernel.launch import KernelProcess

EXTREME_INTS = [0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1]
EXTREME_FLOATS = [0.0, 5e-324, 1e-300, 1e-30, 100.0, 1e300, math.inf, -math.inf, math.nan]
# float32: the default bfloat16 path needs AVX-512 or AVX-NE-CONVERT in oneDNN and fails to start on AVX2-only CPUs
SMALL_KERNEL = {"kv-budget": 1024, "max-batch": 8, "arena-mb": 16, "log-level": "warning", "dtype": "float32"}
# runs aiosd from another source tree (a clone of an earlier commit): its own cwd and sys.path, this interpreter
LAUNCH_FROM_SOURCE = (
    "import os, runpy, sys; src = sys.argv.pop(1); os.chdir(src); sys.path.insert(0, src); "
    "runpy.run_module('kernel.daemon', run_name='__main__', alter_sys=True)"
)


class ObservedKernel(KernelProcess):
    """One aiosd child, from this tree or kernel_src, with its pid, RSS and fd count readable from /proc."""

    def __init__(self, address: str, options: dict, log_path: Path, kernel_src: str | None = None):
        super().__init__(address, options, log_path)
        if kernel_src:
            flags = [arg for flag, value in options.items() for arg in (f"--{flag}", str(value))]
            self.argv = [
                sys.executable,
                "-c",
                LAUNCH_FROM_SOURCE,
                os.path.abspath(kernel_src),
                "--address",
                address,
                *flags,
            ]

    @property
    def pid(self) -> int:
        return int(self.ready_line.rpartition("pid=")[2].split()[0])

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def rss_mib(self) -> float:
        with open(f"/proc/{self.pid}/status") as status:
            kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        return kib / 1024

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


def healthy(address: str, timeout_s: float = 30.0, generate: bool = False) -> bool:
    """A normal agent's ping (and a short chat call) answered within the timeout."""
    try:
        with sdk.connect(address, name="health", timeout=timeout_s) as kernel:
            kernel.ping()
            return not generate or isinstance(kernel.chat([{"role": "user", "content": "Hi"}], max_tokens=4), str)
    except Exception as error:  # any failure to answer is what this check reports, not a crash of the bench
        print(f"  health check failed: {type(error).__name__}: {str(error)[:200]}", file=sys.stderr)
        return False


# ---- frames ----------------------------------------------------------------------------------------------------------


def random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(10 if depth < 3 else 8)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice(EXTREME_INTS) if rng.random() < 0.5 else rng.randint(-(2**63), 2**64 - 1)
    if kind == 2:
        return rng.choice(EXTREME_FLOATS) if rng.random() < 0.5 else rng.uniform(-1e9, 1e9)
    if kind in (3, 4):
        n = rng.choice([0, 1, 5, 20, 300]) if rng.random() > 0.01 else 20_000
        return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x2FFF)])) for _ in range(n))
    if kind == 5:
        return rng.randbytes(rng.randrange(40))
    if kind == 6:
        return msgpack.ExtType(rng.randrange(128), rng.randbytes(rng.randrange(9)))
    if kind == 7:
        return rng.choice(["a1", "system", "user", "", "x" * 70])
    if kind == 8:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(6))]
    return {random_key(rng): random_value(rng, depth + 1) for _ in range(rng.randrange(5))}


def random_key(rng: random.Random):
    return (
        rng.choice(["name", "prompt", "messages", "priority", "max_tokens", "x", "", "id"])
        if rng.random() < 0.9
        else rng.choice([None, 1, 1.5, b"k"])
    )  # non-string keys: unreadable frames


def wrong_body(rng: random.Random, syscall: str) -> dict:
    """The syscall's own field names with random values, some dropped, maybe one unknown field."""
    names = list(SYSCALLS[syscall][0].__dataclass_fields__)
    body = {name: random_value(rng) for name in names if rng.random() < 0.6}
    if rng.random() < 0.2:
        body[random_key(rng)] = random_value(rng)
    return body


def extreme_call(rng: random.Random, agent_id: str) -> tuple[str, dict]:
    """A call valid but for one extreme value that passes the type check (what handlers and the engine then see)."""
    field, value = rng.choice(
        [
            ("priority", rng.choice(EXTREME_INTS)),
            ("temperature", rng.choice(EXTREME_FLOATS)),
            ("top_p", rng.choice(EXTREME_FLOATS)),
            ("top_k", rng.choice(EXTREME_INTS)),
            ("seed", rng.choice(EXTREME_INTS)),
            ("max_tokens", rng.choice(EXTREME_INTS)),
            ("stop", ["x"] * rng.choice([1, 100, 10_000])),
            ("predicted_tokens", rng.choice(EXTREME_INTS)),
        ]
    )
    return rng.choice(
        [
            ("llm.generate", {"prompt": "Hi", "max_tokens": 2, field: value}),
            ("proc.set_priority", {"agent_id": agent_id, "priority": rng.choice(EXTREME_INTS)}),
            ("proc.list", {}),
            ("kernel.stats", {}),
        ]
    )


def next_frame(rng: random.Random, agent_id: str, req_id: str) -> tuple[list[bytes], bool]:
    """One message (its parts) and whether it is answerable under req_id."""
    roll = rng.random()
    if roll < 0.25:
        return [rng.randbytes(rng.randrange(64))], False
    if roll < 0.45:
        return [msgpack.packb(random_value(rng), use_bin_type=True)], False
    if roll < 0.48:
        return [rng.randbytes(rng.randrange(16)) for _ in range(rng.randrange(2, 5))], False  # multipart
    syscall, body = (
        extreme_call(rng, agent_id)
        if roll < 0.6
        else (rng.choice(sorted(SYSCALLS)), wrong_body(rng, rng.choice(sorted(SYSCALLS))))
    )
    packed = msgpack.packb({"v": 1, "id": req_id, "type": syscall, "body": body}, use_bin_type=True)
    try:
        msgpack.unpackb(packed)
    except ValueError:  # a non-string key: the kernel cannot read the id to answer under
        return [packed], False
    return [packed], True


# ---- the run ---------------------------------------------------------------------------------------------------------


class Connection:
    """A DEALER that said hello; a silent one has a 1-message receive queue and never reads, so replies back up."""

    def __init__(self, context: zmq.Context, address: str, name: str, silent: bool):
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        if silent:
            self.socket.setsockopt(zmq.RCVHWM, 1)
            self.socket.setsockopt(zmq.RCVBUF, 4096)
        self.socket.connect(address)
        self.silent = silent
        self.pending: set[str] = set()
        self.socket.send(msgpack.packb({"v": 1, "id": "hello", "type": "hello", "body": {"name": name}}))
        reply = msgpack.unpackb(self.socket.recv()) if self.socket.poll(60_000) else {}
        self.agent_id = reply.get("body", {}).get("agent_id", "a1") if reply.get("type") == "result" else "a1"

    def drain(self, stats: dict) -> None:
        while not self.silent and self.socket.poll(0):
            reply = msgpack.unpackb(self.socket.recv(), strict_map_key=False)
            stats["replies"] += 1
            if reply.get("id") in self.pending and reply.get("type") in ("result", "error"):
                self.pending.discard(reply["id"])
                stats["answered"] += 1


def fuzz_epoch(kernel: ObservedKernel, rng: random.Random, budget: int, args, stats: dict) -> bool:
    """Send up to budget frames; True if the kernel survived (alive and its health ping answered)."""
    context = zmq.Context()
    conns = [Connection(context, kernel.address, f"fuzz{i}", silent=i < args.silent) for i in range(args.connections)]
    survived, sent = True, 0
    try:
        while sent < budget and survived:
            conn = conns[sent % len(conns)]
            req_id = f"f{stats['sent']}"
            parts, answerable = next_frame(rng, conn.agent_id, req_id)
            conn.socket.send_multipart(parts)
            sent, stats["sent"] = sent + 1, stats["sent"] + 1
            if answerable:
                stats["answerable_silent" if conn.silent else "answerable"] += 1
                if not conn.silent:
                    conn.pending.add(req_id)
            if sent % 50 == 0:
                for reader in conns:
                    reader.drain(stats)
            if sent % args.check_every == 0:
                survived = kernel.alive() and healthy(kernel.address)
                print(
                    f"  {stats['sent']} frames, {stats['answered']}/{stats['answerable']} answered, "
                    f"RSS {kernel.rss_mib() if kernel.alive() else float('nan'):.0f} MiB",
                    flush=True,
                )
        last_progress, answered = time.monotonic(), -1
        while survived and time.monotonic() - last_progress < args.drain_s and any(c.pending for c in conns):
            for reader in conns:
                reader.drain(stats)
            if stats["answered"] != answered:
                answered, last_progress = stats["answered"], time.monotonic()
            time.sleep(0.05)
        return survived and kernel.alive() and healthy(kernel.address)
    finally:
        for conn in conns:
            conn.socket.close(linger=0)
        context.term()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--silent", type=int, default=2, help="connections that never read their replies")
    parser.add_argument("--check-every", type=int, default=5000, help="frames between health pings")
    parser.add_argument("--drain-s", type=float, default=60.0, help="wait this long without a reply at the end")
    parser.add_argument("--max-crashes", type=int, default=10, help="stop after this many kernel restarts")
    parser.add_argument("--kernel-src", default=None, help="run aiosd from this source tree (a clone of main)")
    parser.add_argument(
        "--mode",
        choices=("frames", "services"),
        default="frames",
        help="services: one agent floods each service beside a victim agent (bench/service_flood.py)",
    )
    parser.add_argument("--floods", default=None, help="services mode: which floods, comma-separated (default: all)")
    parser.add_argument("--rounds", type=int, default=3, help="services mode: victim measurements per flood")
    parser.add_argument("--model", default=None, help="services mode: aiosd's --model")
    args = parser.parse_args(argv)
    if args.mode == "services":
        from bench import service_flood  # it builds on ObservedKernel, defined here

        floods = args.floods.split(",") if args.floods else list(service_flood.FLOODS)
        service_flood.report(service_flood.run(floods, args.rounds, args.model))
        return 0
    rng = random.Random(args.seed)
    stats = {"sent": 0, "replies": 0, "answerable": 0, "answered": 0, "answerable_silent": 0}
    crashes, rss = [], []
    with tempfile.TemporaryDirectory(prefix="aios-fuzz-") as workdir:
        while stats["sent"] < args.frames and len(crashes) <= args.max_crashes:
            log_path = Path(workdir) / f"aiosd-{len(crashes)}.log"
            with ObservedKernel(f"ipc://{workdir}/kernel.sock", SMALL_KERNEL, log_path, args.kernel_src) as kernel:
                rss_before = kernel.rss_mib()
                start = stats["sent"]
                survived = fuzz_epoch(kernel, rng, args.frames - stats["sent"], args, stats)
                rss.append((rss_before, kernel.rss_mib() if kernel.alive() else float("nan")))
                final_health = survived and healthy(kernel.address, generate=True)
                if not survived:
                    crashes.append(
                        f"between frames {start} and {stats['sent']}: "
                        f"{'process exited' if not kernel.alive() else 'ping unanswered'}; "
                        f"log tail: {log_path.read_text()[-600:]!r}"
                    )
    _report(args, stats, crashes, rss, final_health)
    return 0 if not crashes and stats["answered"] == stats["answerable"] and final_health else 1


def _report(args, stats: dict, crashes: list[str], rss: list[tuple], final_health: bool) -> None:
    print(
        f"\nbench.fuzz: {args.frames} frames, seed {args.seed}, {args.connections} connections "
        f"({args.silent} never read), kernel from {args.kernel_src or 'this tree'}"
    )
    rows = [
        ("frames sent", stats["sent"]),
        ("replies received (reading connections)", stats["replies"]),
        ("answerable frames (reading connections)", stats["answerable"]),
        ("  answered", stats["answered"]),
        ("answerable frames on silent connections", stats["answerable_silent"]),
        ("kernel crashes", len(crashes)),
        (
            "kernel RSS before/after, MiB (per kernel run)",
            ", ".join(f"{before:.0f} -> {after:.0f}" for before, after in rss),
        ),
        ("final health check (SDK chat call)", "answered" if final_health else "FAILED"),
    ]
    width = max(len(name) for name, _ in rows)
    print("\n".join(f"| {name:<{width}} | {value} |" for name, value in rows))
    for crash in crashes:
        print(f"crash {crash}")


if __name__ == "__main__":
    sys.exit(main())
