"""Hostile service traffic beside a victim agent: what one flooding agent costs another on a live aiosd.

    python -m bench.fuzz --mode services [--floods fs_write,mem_add,...] [--rounds 3]

One aiosd with its memory and file services (default model unless --model). A victim agent, in this process, measures
its decode rate (a 48-token greedy chat with ignore_eos, tokens after the first over the time after the first) and its
service-call latency (fs.read and mem.search of its own space, wall time at the client), alone and then while one
flooder process, another principal's agent, floods one service with pipelined calls:

    fs_write   small writes to fresh paths, up to WINDOW in flight
    mem_add    memory adds (an embedding each)
    share      access.share granting and revoking in a loop
    denials    fs.read of the victim's space without a share: each one a denial for the audit log
    dirs       writes to deep fresh directories
    conns      opens silent connections that never say hello, as many as the kernel lets it

Each line of the table is the median over --rounds measurements; ratios are against the solo run of the same kernel.
The last column is the CPU the flooder's own process and aiosd used during the measurement (cores): on 2 cores a
flooder that keeps one core busy by itself leaves the engine's two threads one core, whatever the kernel does.
Targets (issue 17): decode >= 0.8x solo and service calls within the victim's fair share with one flooder on 2 cores.
These flooders are hostile (a new call for every answer, busy or not, from a process of their own);
bench/service_fairness.py measures a polite one that keeps its lane full, and shutdown with full queues.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import msgpack
import zmq

import sdk
from bench.fuzz import ObservedKernel

FLOODS = ("fs_write", "mem_add", "share", "denials", "dirs", "conns")
WINDOW = 1500  # calls a flooder keeps in flight
MAX_FLOOD_CONNECTIONS = 4000
VICTIM_TOKENS = 48
SERVICE_KERNEL = {"memory": "on", "storage": "on", "tools": "off", "log-level": "warning"}


# ---- the flooder (a process of its own) -----------------------------------------------------------------------------


def _flood_call(kind: str, n: int, victim_space: str) -> tuple[str, dict]:
    if kind == "fs_write":
        return "fs.write", {"path": f"flood/{n}.txt", "data": b"x" * 512}
    if kind == "mem_add":
        return "mem.add", {"text": f"flood note number {n} about nothing in particular"}
    if kind == "share":
        return "access.share", {"kind": "fs", "grantee": f"peer{n % 50}", "mode": "r" if n % 2 else "none"}
    if kind == "denials":
        return "fs.read", {"path": "victim.txt", "space": victim_space}
    if kind == "dirs":
        return "fs.write", {"path": "/".join(f"d{n}x{i}" for i in range(12)) + "/f", "data": b""}
    raise ValueError(kind)


def flooder(address: str, kind: str, victim_space: str, flooding, stop) -> None:
    """Runs until stop is set; sets flooding once its window is full (or, for conns, once it holds its connections)."""
    context = zmq.Context()
    sockets = []
    try:
        if kind == "conns":
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            context.set(zmq.MAX_SOCKETS, MAX_FLOOD_CONNECTIONS + 16)
            while not stop.is_set() and len(sockets) < MAX_FLOOD_CONNECTIONS:
                try:
                    sock = context.socket(zmq.DEALER)
                except zmq.ZMQError:  # this process's own descriptors ran out: hold what it has
                    break
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(address)
                sockets.append(sock)
            flooding.set()
            stop.wait()
            return
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sockets.append(sock)
        sock.connect(address)
        sock.send(msgpack.packb({"v": 1, "id": "h", "type": "hello", "body": {"name": "flooder"}}))
        sock.recv()
        sent = in_flight = 0
        while not stop.is_set():
            while in_flight < WINDOW:
                syscall, body = _flood_call(kind, sent, victim_space)
                sock.send(msgpack.packb({"v": 1, "id": sent, "type": syscall, "body": body}, use_bin_type=True))
                sent, in_flight = sent + 1, in_flight + 1
            flooding.set()
            if sock.poll(200):
                while sock.poll(0):
                    sock.recv()
                    in_flight -= 1
    finally:
        for sock in sockets:
            sock.close(linger=0)
        context.term()


# ---- the victim ------------------------------------------------------------------------------------------------------


def decode_rate(kernel: sdk.Kernel) -> float:
    completion = kernel.chat(
        [{"role": "user", "content": "Count slowly from one to one hundred."}],
        max_tokens=VICTIM_TOKENS,
        ignore_eos=True,
        full=True,
        timeout=600,
    )
    timing = completion.timing
    return (completion.usage.completion_tokens - 1) / max(timing.total_s - (timing.ttft_s or 0.0), 1e-9)


def service_latency(kernel: sdk.Kernel) -> tuple[float, float]:
    """Seconds for one fs.read and one mem.search of the victim's own space."""
    start = time.perf_counter()
    kernel.fs.read("victim.txt")
    middle = time.perf_counter()
    kernel.memory.search("where is the key?", k=1)
    return middle - start, time.perf_counter() - middle


def measure(kernel: sdk.Kernel, rounds: int) -> dict:
    rates, reads, searches = [], [], []
    for _ in range(rounds):
        rates.append(decode_rate(kernel))
        read, search = service_latency(kernel)
        reads.append(read)
        searches.append(search)
    return {"decode": statistics.median(rates), "read": statistics.median(reads), "search": statistics.median(searches)}


def run(floods: list[str], rounds: int, model: str | None = None) -> list[tuple]:
    rows = []
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="aios-flood-") as workdir:
        options = SERVICE_KERNEL | ({"model": model} if model else {})
        with ObservedKernel(f"ipc://{workdir}/kernel.sock", options, Path(workdir) / "aiosd.log") as aiosd:
            with sdk.connect(aiosd.address, name="victim", timeout=600) as victim:
                victim.fs.write("victim.txt", "the key is under the blue pot")
                victim.memory.add("The spare key is under the blue pot.")
                victim_space = f"uid:{os.getuid()}/victim"
                decode_rate(victim)  # one warm-up call, not counted
                solo = measure(victim, rounds)
                rows.append(("solo", solo, None))
                for kind in floods:
                    flooding, stop = spawn.Event(), spawn.Event()
                    process = spawn.Process(target=flooder, args=(aiosd.address, kind, victim_space, flooding, stop))
                    process.start()
                    flooding.wait(300)
                    before = time.perf_counter(), _cpu_s(process.pid), _cpu_s(aiosd.pid)
                    loaded = measure(victim, rounds)
                    wall = time.perf_counter() - before[0]
                    loaded["flooder_cores"] = (_cpu_s(process.pid) - before[1]) / wall
                    loaded["kernel_cores"] = (_cpu_s(aiosd.pid) - before[2]) / wall
                    stop.set()
                    process.join(120)
                    rows.append((kind, loaded, solo))
                    print(
                        f"  {kind}: decode {loaded['decode']:.1f} tok/s, read {loaded['read'] * 1e3:.1f} ms, "
                        f"search {loaded['search'] * 1e3:.1f} ms; kernel alive: {aiosd.alive()}",
                        flush=True,
                    )
    return rows


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process, from /proc (fields 14 and 15, after the command name)."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(rows: list[tuple]) -> None:
    print(
        "\n| flood | victim decode tok/s | x solo | fs.read ms | x solo | mem.search ms | x solo | cores: flooder "
        "process / aiosd |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for kind, values, solo in rows:
        ratio = (
            (lambda key, values=values, solo=solo: f"{values[key] / solo[key]:.2f}") if solo else (lambda key: "1.00")
        )
        print(
            f"| {kind} | {values['decode']:.1f} | {ratio('decode')} | {values['read'] * 1e3:.1f} | {ratio('read')} "
            f"| {values['search'] * 1e3:.1f} | {ratio('search')} | "
            + (f"{values['flooder_cores']:.2f} / {values['kernel_cores']:.2f} |" if solo else "- |")
        )
