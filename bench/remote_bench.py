"""The remote engine measured: (1) tok/s of N agents through aiosd → a llama.cpp server against the same N clients
talking to that server directly (the kernel's overhead), alternated in one run; (2) time to fail over when a replica
is killed mid-stream: from the SIGKILL to the next token of the calls it held, through aiosd (median of several runs;
the victim is restarted on its port between runs and rejoins through the health check).

    python -m bench.remote_bench [--agents 8] [--calls 2] [--max-tokens 48] [--runs 3] [--failover-runs 5]

Every agent streams `calls` completions one after the other, greedy with ignore_eos (exact lengths); the direct
clients send the same prompts as text to /v1/completions; the SDK agents send llm.generate. Agents are threads of this
process in both cases, so both pay the same client-side cost.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.llama_server import LlamaServer
from kernel.launch import KernelProcess
from sdk import connect


class RemoteKernel(KernelProcess):
    """aiosd on --engine openai over the given replicas."""

    def __init__(self, address: str, urls: list[str], options: dict[str, str], log_path: Path):
        super().__init__(address, {"engine": "remote", "engine-url": urls, **options}, log_path)


def prompt(agent: int, call: int, session: int = 0) -> str:
    """A prompt no earlier run sent (session first): neither path finds the other's prompts in the server's cache."""
    return (
        f"Session {session:03d}. Agent {agent}, note {call}: a short story about the sea and a lighthouse keeper named"
    )


def direct_call(url: str, text: str, max_tokens: int) -> int:
    """One streamed completion straight to the server; returns the completion tokens it reports."""
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    conn = http.client.HTTPConnection(host_port, timeout=300)
    # the sampling the remote engine asks for (greedy; top_k and min_p off), without its token-id extras
    body = {
        "prompt": text,
        "max_tokens": max_tokens,
        "stream": True,
        "temperature": 0,
        "ignore_eos": True,
        "top_k": -1,
        "min_p": 0.0,
    }
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp, tokens = conn.getresponse(), 0
    for line in resp:
        if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
            usage = json.loads(line[5:]).get("usage")
            tokens = usage["completion_tokens"] if usage else tokens
    conn.close()
    return tokens


def kernel_call(kernel, text: str, max_tokens: int) -> int:
    tokens = 0
    for item in kernel.stream(prompt=text, max_tokens=max_tokens, ignore_eos=True, full=True):
        if not isinstance(item, str):
            tokens = item["usage"]["completion_tokens"] if isinstance(item, dict) else item.usage.completion_tokens
    return tokens


def run_agents(n: int, calls: int, work) -> tuple[int, float]:
    """n threads, each `calls` sequential calls of work(agent, call) -> tokens; returns (tokens, wall seconds)."""
    totals, barrier = [0] * n, threading.Barrier(n + 1)

    def agent(i: int) -> None:
        barrier.wait()
        for c in range(calls):
            totals[i] += work(i, c)

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return sum(totals), time.perf_counter() - start


PINGER = """
import sys, time
from sdk import connect
with connect(sys.argv[1], name="pinger") as k:
    k.ping()
    print("ready", flush=True)
    sys.stdin.readline()
    end, n = time.monotonic() + float(sys.argv[2]), 0
    while time.monotonic() < end:
        k.ping()
        n += 1
    print(n, flush=True)
"""


def syscall_rate(address: str, processes: int, seconds: float) -> float:
    """kernel.ping syscalls/s answered by one aiosd for `processes` agent processes pinging back to back at once."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PINGER, address, str(seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:  # all connected: start them together
            proc.stdin.write("go\n")
            proc.stdin.flush()
        return sum(int(proc.stdout.readline()) for proc in procs) / seconds
    finally:
        for proc in procs:
            proc.wait()


def throughput(args, workdir: Path) -> dict:
    rows = {"direct": [], "aiosd": []}
    with (
        LlamaServer(workdir / "server.log", slots=args.agents, threads=args.threads) as server,
        RemoteKernel(
            f"ipc://{workdir}/kernel.sock", [server.url], {"max-batch": str(args.agents)}, workdir / "aiosd.log"
        ) as kernel,
    ):
        clients = [connect(kernel.address, name=f"agent{i}") for i in range(args.agents)]
        try:
            session = iter(range(1000))
            modes = {
                "direct": lambda i, c, k: direct_call(server.url, prompt(i, c, k), args.max_tokens),
                "aiosd": lambda i, c, k: kernel_call(clients[i], prompt(i, c, k), args.max_tokens),
            }
            for mode in modes:  # warm both paths
                k = next(session)
                run_agents(args.agents, 1, lambda i, c, m=modes[mode], k=k: m(i, c, k))
            for run in range(args.runs):
                for mode in ("direct", "aiosd") if run % 2 == 0 else ("aiosd", "direct"):
                    k = next(session)
                    tokens, wall = run_agents(args.agents, args.calls, lambda i, c, m=modes[mode], k=k: m(i, c, k))
                    expected = args.agents * args.calls * args.max_tokens
                    assert tokens == expected, f"{mode}: {tokens} tokens, expected {expected}"
                    rows[mode].append(tokens / wall)
                    print(
                        f"  run {run + 1} {mode:6s} {tokens / wall:7.1f} tok/s ({tokens} tokens in {wall:.2f} s)",
                        flush=True,
                    )
        finally:
            for client in clients:
                client.close()
        for processes in args.pingers:
            rows.setdefault("syscalls", []).append((processes, syscall_rate(kernel.address, processes, 3.0)))
            print(f"  {processes:3d} agent processes pinging: {rows['syscalls'][-1][1]:,.0f} syscalls/s", flush=True)
    return rows


def failover(args, workdir: Path) -> tuple[list[float], list[float]]:
    """Per run: seconds from the SIGKILL of a replica to the next token of the calls it held (the slowest of them),
    and to aiosd logging it down (detection; from the log's millisecond timestamps)."""
    n, times, detections = 4, [], []
    with LlamaServer(workdir / "survivor.log", slots=n, threads=args.threads) as survivor:
        victim = LlamaServer(workdir / "victim.log", slots=n, threads=args.threads)
        victim.start()
        try:
            _failover_runs(args, workdir, survivor, victim, n, times, detections)
        finally:
            victim.kill()  # the last restarted one (an earlier one was killed by its run)
    return times, detections


def _failover_runs(
    args, workdir: Path, survivor: LlamaServer, victim: LlamaServer, n: int, times: list[float], detections: list[float]
) -> None:
    with RemoteKernel(
        f"ipc://{workdir}/kernel-fo.sock", [victim.url, survivor.url], {"max-batch": str(n)}, workdir / "aiosd-fo.log"
    ) as kernel:
        for run in range(args.failover_runs):
            stamps: dict[int, list[float]] = {i: [] for i in range(n)}
            started = [threading.Event() for _ in range(n)]

            def agent(i: int, run=run, stamps=stamps, started=started) -> None:
                with connect(kernel.address, name=f"fo{i}") as k:
                    for _ in k.stream(prompt=prompt(i, 0, 500 + run), max_tokens=64, ignore_eos=True):
                        stamps[i].append(time.monotonic())
                        if len(stamps[i]) >= 3:
                            started[i].set()

            threads = [threading.Thread(target=agent, args=(i,)) for i in range(n)]
            for t in threads:
                t.start()
            for event in started:
                assert event.wait(300), "a call got no tokens"
            killed, killed_wall = time.monotonic(), time.time()
            victim.kill()
            for t in threads:
                t.join()
            gaps = [next(s for s in stamps[i] if s > killed) - killed for i in range(n) if stamps[i][-1] > killed]
            times.append(max(gaps))
            detections.append(_logged_down(kernel.log_path.read_text(), victim.url) - killed_wall)
            print(
                f"  run {run + 1}: slowest call resumed {max(gaps) * 1e3:.0f} ms after the kill, replica found "
                f"down after {detections[-1] * 1e3:.0f} ms",
                flush=True,
            )
            rejoined = kernel.log_path.read_text().count("is healthy again")
            victim.start()  # on its port again: the kernel's health check lets it rejoin
            _wait_for(lambda rejoined=rejoined: kernel.log_path.read_text().count("is healthy again") > rejoined, 120)


def _logged_down(log: str, url: str) -> float:
    """Wall time of the last "replica URL is down" line (logging's asctime: local time, milliseconds after a comma)."""
    line = [line for line in log.splitlines() if f"replica {url} is down" in line][-1]
    stamp, millis = line[:23].split(",")
    return time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1e3


def _wait_for(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the restarted replica did not rejoin")
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--failover-runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads per server")
    parser.add_argument(
        "--pingers",
        type=int,
        nargs="*",
        default=[1, 4, 16],
        help="agent processes pinging at once, for the kernel's syscalls/s (one 3-s run each)",
    )
    parser.add_argument("--only", choices=("all", "throughput", "failover"), default="all")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aios-remote-bench-") as tmp:
        workdir = Path(tmp)
        rows, fo = {}, []
        if args.only in ("all", "throughput"):
            print(f"throughput: {args.agents} agents × {args.calls} calls × {args.max_tokens} tokens", flush=True)
            rows = throughput(args, workdir)
        if args.only in ("all", "failover"):
            print("failover: 4 streaming calls over 2 replicas, one SIGKILLed mid-stream", flush=True)
            fo, detected = failover(args, workdir)
    print()
    print("| measure | through aiosd | direct to the server | ratio |")
    print("|---|---|---|---|")
    if rows.get("aiosd"):
        direct, kernel = statistics.median(rows["direct"]), statistics.median(rows["aiosd"])
        print(
            f"| tok/s, {args.agents} agents (median of {args.runs}) | {kernel:.1f} | {direct:.1f} | "
            f"{kernel / direct:.2f} |"
        )
        for run, (k, d) in enumerate(zip(rows["aiosd"], rows["direct"]), start=1):
            print(f"| run {run} | {k:.1f} | {d:.1f} | {k / d:.2f} |")
    for processes, rate in rows.get("syscalls", []):
        print(f"| kernel.ping syscalls/s, {processes} agent processes at once | {rate:,.0f} | – | – |")
    if fo:
        print(
            f"| fail-over time, median of {len(fo)} (min–max) | {statistics.median(fo) * 1e3:.0f} ms "
            f"({min(fo) * 1e3:.0f}–{max(fo) * 1e3:.0f}) | – | – |"
        )
        print(
            f"| of which: the kill until aiosd found the replica down, median | "
            f"{statistics.median(detected) * 1e3:.0f} ms | – | – |"
        )


if __name__ == "__main__":
    main()
