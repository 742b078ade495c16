"""Protection scenarios against a real aiosd, each printed as a table of what was observed:

(a) many agent processes x 3 syscalls at once (ping, proc.list, llm.generate max_tokens=4): all answered?
(b) agents killed with SIGKILL mid-generation: gone from proc.list / kernel.stats, no /dev/shm/aios-* but the kernel's?
(c) connect/hello/close cycles from one process: kernel fd count and agent count before/after
(d) a client that sends many streaming calls and pings and never reads: kernel RSS over time, its calls cancelled?
(e) cost of the checks: no-op syscall round trip (median µs) and batch-1 decode tok/s — compare against main before
    the change with --kernel-src (a clone of the earlier commit), same machine, same run options.

    python -m bench.protection [--quick] [--only a,b,...] [--kernel-src PATH]

Raw msgpack frames (hello with a name only) are used wherever the tool must also drive an older kernel.
"""

from __future__ import annotations

import argparse
import glob
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import zmq

from bench.fuzz import SMALL_KERNEL, ObservedKernel, healthy

KERNEL_OPTIONS = {**SMALL_KERNEL, "kv-budget": 4096, "max-batch": 16, "lease": 30}
AGENT = r"""
import os, sys, time
sys.path.insert(0, os.getcwd())
import sdk
address, start_file, mode = sys.argv[1], sys.argv[2], sys.argv[3]
while not os.path.exists(start_file):
    time.sleep(0.01)
ok = []
try:
    with sdk.connect(address, name=f"p{os.getpid()}", timeout=600) as kernel:
        if mode == "three":
            kernel.ping(); ok.append("ping")
            kernel.ps(); ok.append("proc.list")
            kernel.generate("Hello", max_tokens=4); ok.append("llm.generate")
        else:
            print("generating", flush=True)
            kernel.generate("Tell me a long story.", max_tokens=400, ignore_eos=True)
except Exception as error:
    print("error", type(error).__name__, str(error)[:100], flush=True)
print("ok", *ok, flush=True)
"""


class Raw:
    """A bare DEALER speaking the wire protocol by hand (works against old and new kernels alike)."""

    def __init__(self, context: zmq.Context, address: str, name: str | None = "bench", rcvhwm: int | None = None):
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        if rcvhwm is not None:  # a client that stops reading: tiny queue, so replies back up into the kernel
            self.socket.setsockopt(zmq.RCVHWM, rcvhwm)
            self.socket.setsockopt(zmq.RCVBUF, 4096)
        self.socket.connect(address)
        self.ids = 0
        self.name = name
        self.reply = self._call_once("hello", {"name": name}, 120.0) if name else None

    def send(self, syscall: str, body: dict) -> str:
        self.ids += 1
        self.socket.send(msgpack.packb({"v": 1, "id": self.ids, "type": syscall, "body": body}))
        return self.ids

    def call(self, syscall: str, body: dict, timeout_s: float = 120.0) -> dict:
        reply = self._call_once(syscall, body, timeout_s)
        if self.name and reply.get("body", {}).get("code") == "hello_required":  # reaped while silent (lease)
            self._call_once("hello", {"name": self.name}, timeout_s)
            reply = self._call_once(syscall, body, timeout_s)
        return reply

    def _call_once(self, syscall: str, body: dict, timeout_s: float) -> dict:
        req_id = self.send(syscall, body)
        deadline = time.monotonic() + timeout_s
        while self.socket.poll(max(0.0, deadline - time.monotonic()) * 1000):
            reply = msgpack.unpackb(self.socket.recv(), strict_map_key=False)
            if reply.get("id") == req_id and reply.get("type") in ("result", "error"):
                return reply
        return {"type": "timeout"}

    def close(self) -> None:
        self.socket.close(linger=0)


def table(title: str, rows: list[tuple[str, object]]) -> None:
    print(f"\n### {title}\n\n| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    sys.stdout.flush()


def stats_of(observer: Raw, timeout_s: float = 60.0) -> dict:
    """kernel.stats values, or {"error": ...} naming why there are none."""
    reply = observer.call("kernel.stats", {}, timeout_s=timeout_s)
    return reply.get("body", {}).get("values", {}) if reply.get("type") == "result" else {"error": str(reply)[:200]}


def proc_names(observer: Raw) -> tuple[list[str], str]:
    """The agent names proc.list shows the observer, and whether it may see everyone's."""
    reply = observer.call("proc.list", {}, timeout_s=60)
    if reply.get("type") != "result":
        return [], f"proc.list refused: {str(reply.get('body'))[:200]}"
    return [agent["name"] for agent in reply["body"]["agents"]], "ok"


def orphan_segments(kernel_pid: int) -> tuple[list[str], list[str]]:
    """/dev/shm/aios-* segments: those of processes other than the kernel (other engineers' kernels share this
    machine), and among them the orphans, whose process is gone."""
    others = [s for s in sorted(glob.glob("/dev/shm/aios-*")) if not s.startswith(f"/dev/shm/aios-{kernel_pid}-")]
    pid_of = lambda path: path[len("/dev/shm/aios-") :].split("-")[0].split(".")[0]  # noqa: E731
    return others, [s for s in others if not (pid_of(s).isdigit() and os.path.exists(f"/proc/{pid_of(s)}"))]


def spawn_agents(address: str, count: int, mode: str, workdir: str) -> tuple[list[subprocess.Popen], str]:
    start_file = os.path.join(workdir, f"start-{mode}-{time.monotonic_ns()}")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", AGENT, address, start_file, mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=os.getcwd(),
        )
        for _ in range(count)
    ]
    return procs, start_file


# ---- scenarios -------------------------------------------------------------------------------------------------------


def scenario_many_agents(kernel: ObservedKernel, args, workdir: str) -> None:
    procs, start_file = spawn_agents(kernel.address, args.agents, "three", workdir)
    time.sleep(2.0)  # let the interpreters start, so the calls go out together
    Path(start_file).touch()
    begin = time.monotonic()
    outputs = [proc.communicate(timeout=900)[0] for proc in procs]
    answered = {
        name: sum(name in out.split("ok", 1)[-1].split() for out in outputs)
        for name in ("ping", "proc.list", "llm.generate")
    }
    errors = sorted({line for out in outputs for line in out.splitlines() if line.startswith("error")})[:3]
    table(
        f"(a) {args.agents} agent processes x 3 syscalls at once",
        [
            *((f"{name} answered", f"{n}/{args.agents}") for name, n in answered.items()),
            ("all answered", all(n == args.agents for n in answered.values())),
            ("wall time after the start signal", f"{time.monotonic() - begin:.1f} s"),
            ("first errors", errors or "none"),
            ("kernel alive", kernel.alive()),
        ],
    )


def scenario_sigkill(kernel: ObservedKernel, args, workdir: str) -> None:
    procs, start_file = spawn_agents(kernel.address, args.killed, "long", workdir)
    Path(start_file).touch()
    for proc in procs:  # each prints "generating" just before its long call goes out
        proc.stdout.readline()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and stats_of(args.observer).get("tokens_generated", 0) < 2 * args.killed:
        time.sleep(0.2)
    running = stats_of(args.observer)
    killed = {f"p{proc.pid}" for proc in procs}
    seen_before = len(killed & set(proc_names(args.observer)[0]))  # 0 would make "none left" meaningless
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline, left = time.monotonic() + 30, killed
    while time.monotonic() < deadline:
        names, visibility = proc_names(args.observer)
        left = killed & set(names)
        if not left:
            break
        time.sleep(0.5)
    after = stats_of(args.observer)
    others, orphans = orphan_segments(kernel.pid)
    table(
        f"(b) {args.killed} agents killed with SIGKILL mid-generation",
        [
            (
                "requests running+waiting before the kill",
                f"{running.get('requests_running')}+{running.get('requests_waiting')}",
            ),
            ("of them in proc.list before the kill", f"{seen_before}/{args.killed}"),
            ("killed agents still in proc.list after 30 s", len(left)),
            ("proc.list visibility", visibility),
            ("requests running+waiting after", f"{after.get('requests_running')}+{after.get('requests_waiting')}"),
            ("agents in kernel.stats after", after.get("agents")),
            ("/dev/shm/aios-* segments of other live processes", len(others) - len(orphans)),
            ("orphaned /dev/shm/aios-* segments (process gone)", orphans or "none"),
            ("kernel alive", kernel.alive()),
        ],
    )


def scenario_connect_cycles(kernel: ObservedKernel, args, workdir: str) -> None:
    fds_before, agents_before = kernel.fd_count(), stats_of(args.observer).get("agents")
    context = zmq.Context()
    failures, first_failure, begin = 0, "none", time.monotonic()
    for i in range(args.cycles):
        raw = Raw(context, kernel.address, name=None)
        reply = raw.call("hello", {"name": f"c{i}"}, 30)  # name only: what old and new kernels both accept
        if reply.get("type") != "result":
            failures, first_failure = failures + 1, first_failure if failures else str(reply)[:200]
        raw.close()
    elapsed = time.monotonic() - begin
    time.sleep(2.0)  # let the kernel see the last disconnects
    context.term()
    table(
        f"(c) {args.cycles} connect/hello/close cycles from one process",
        [
            ("kernel fds before -> after", f"{fds_before} -> {kernel.fd_count() if kernel.alive() else 'dead'}"),
            ("agents before -> after (kernel.stats)", f"{agents_before} -> {stats_of(args.observer).get('agents')}"),
            ("hellos not answered with a result", failures),
            ("first such reply", first_failure),
            ("cycles/s", f"{args.cycles / elapsed:.0f}"),
            ("kernel alive and answering", kernel.alive() and healthy(kernel.address)),
        ],
    )


def scenario_never_reads(kernel: ObservedKernel, args, workdir: str) -> None:
    context = zmq.Context()
    silent = Raw(context, kernel.address, "never-reads", rcvhwm=1)
    rss = [(0.0, kernel.rss_mib())]
    begin = time.monotonic()
    for _ in range(args.streams):
        silent.send("llm.generate", {"prompt": "Count to a thousand:", "max_tokens": 64, "stream": True})
    for second in range(1, args.flood_s + 1):  # then pings, whose replies it never reads either
        while time.monotonic() - begin < second:
            for _ in range(200):
                silent.send("kernel.ping", {})
        if second % max(1, args.flood_s // 6) == 0:
            rss.append((time.monotonic() - begin, kernel.rss_mib() if kernel.alive() else float("nan")))
    flood_end = time.monotonic()
    after = stats_of(args.observer, timeout_s=300) if kernel.alive() else {"error": "kernel exited"}
    answer_s = time.monotonic() - flood_end
    rss.append((time.monotonic() - begin, kernel.rss_mib() if kernel.alive() else float("nan")))
    silent.close()
    context.term()
    table(
        f"(d) a client sends {args.streams} streaming calls and {args.flood_s} s of pings, never reads",
        [
            ("kernel RSS over time (s: MiB)", ", ".join(f"{t:.0f}: {m:.0f}" for t, m in rss)),
            (
                "requests running+waiting at the end (its calls cancelled if 0+0)",
                f"{after.get('requests_running')}+{after.get('requests_waiting')}"
                if "error" not in after
                else after["error"],
            ),
            ("another agent's kernel.stats answered after the flood in", f"{answer_s:.1f} s"),
            ("kernel alive and answering others", kernel.alive() and healthy(kernel.address)),
        ],
    )


def scenario_cost(kernel: ObservedKernel, args, workdir: str) -> None:
    context = zmq.Context()
    raw = Raw(context, kernel.address, "cost")
    for _ in range(200):
        raw.call("kernel.ping", {})
    samples = []
    for _ in range(args.pings):
        start = time.perf_counter()
        raw.call("kernel.ping", {})
        samples.append(time.perf_counter() - start)
    rates = []
    for _ in range(3):
        reply = raw.call(
            "llm.generate",
            {"prompt": "Once upon a time", "max_tokens": args.decode_tokens, "ignore_eos": True},
            timeout_s=600,
        )
        body = reply.get("body", {})
        if reply.get("type") == "result" and body["timing"]["ttft_s"] is not None:
            decode_s = body["timing"]["total_s"] - body["timing"]["ttft_s"]
            rates.append((body["usage"]["completion_tokens"] - 1) / decode_s)
    raw.close()
    context.term()
    table(
        f"(e) cost of the checks (kernel from {args.kernel_src or 'this tree'})",
        [
            (f"no-op syscall round trip, median of {args.pings} (µs)", f"{statistics.median(samples) * 1e6:.0f}"),
            (
                f"batch-1 decode tok/s, median of 3 x {args.decode_tokens} tokens",
                f"{statistics.median(rates):.1f}" if rates else "no completion",
            ),
            ("compare with", "the same command with --kernel-src <clone of eaa7213>, same machine, same run"),
        ],
    )


SCENARIOS = {
    "e": scenario_cost,
    "a": scenario_many_agents,
    "b": scenario_sigkill,
    "c": scenario_connect_cycles,
    "d": scenario_never_reads,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.protection", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for development")
    parser.add_argument("--only", default="e,a,b,c,d", help="scenarios to run, in order")
    parser.add_argument("--kernel-src", default=None, help="run aiosd from this source tree (a clone of main)")
    args = parser.parse_args(argv)
    sizes = (
        dict(agents=20, killed=4, cycles=300, streams=20, flood_s=6, pings=500, decode_tokens=32)
        if args.quick
        else dict(agents=200, killed=20, cycles=10_000, streams=200, flood_s=60, pings=5000, decode_tokens=128)
    )
    vars(args).update(sizes)
    observer_context = zmq.Context()
    with tempfile.TemporaryDirectory(prefix="aios-protection-") as workdir:
        kernel = None
        try:
            for key in args.only.split(","):
                if kernel is None or not kernel.alive():
                    if kernel is not None:
                        print(f"\n(kernel died during the previous scenario: restarted for ({key}))")
                        kernel.stop()
                    kernel = ObservedKernel(
                        f"ipc://{workdir}/kernel.sock",
                        KERNEL_OPTIONS,
                        Path(workdir) / f"aiosd-{key}.log",
                        args.kernel_src,
                    )
                    kernel.start()
                    args.observer = Raw(observer_context, kernel.address, "observer")  # one, so it leaks nothing
                SCENARIOS[key](kernel, args, workdir)
        finally:
            if kernel is not None:
                args.observer.close()
                kernel.stop()
            observer_context.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
