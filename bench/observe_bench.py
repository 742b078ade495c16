"""What the operator's view costs: kernel.top and GET /metrics at 200 agents, and the decode rate while a scraper polls
both every second.

    python -m bench.observe_bench [--agents 200] [--runs 5] [--decoders 2] [--tokens 48] [--samples 30]

One aiosd (the default model, float32 as the tests run it). --agents idle agents connect (raw DEALER sockets on one
ZeroMQ context in this process) and each makes one 1-token call, so the accounting holds an account with counters
and histograms for each. Then, from an operator connection holding the admin token:

    kernel.ping      round trip of the cheapest syscall: the baseline the others are divided by
    kernel.top       round trip of the full snapshot (limit 500: every agent listed)
    kernel.metrics   round trip of the accounting dict
    GET /metrics     one scrape of the gateway's endpoint (an in-process app with kernel/gateway/metrics.py's router,
                     through httpx's ASGI transport): kernel.metrics plus the Prometheus rendering, which is also
                     timed alone (it runs in the gateway's process, not on the kernel's loop)

each the median of --samples calls. Then the decode rate: --decoders agents each generate --tokens tokens (greedy,
ignore_eos) at once; tokens/s is all their tokens over the wall time from the first send to the last reply. Runs
alternate without and with a scraper thread that calls kernel.top and GET /metrics once a second (as the dashboard
and a Prometheus server would), --runs of each; the table gives the medians and their ratio (target: >= 0.97).

Timings are wall-clock on a shared machine: compare the ratios measured side by side in one run, not the absolute
numbers across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import msgpack
import zmq
from fastapi import FastAPI

from ipc import runtime_dir
from ipc.address import admin_token_path
from ipc.messages import PROTOCOL_VERSION, Metrics, Ping, Top
from kernel.gateway import errors, metrics
from kernel.gateway.agents import AgentPool
from kernel.gateway.guard import RequestGuard
from kernel.launch import KernelProcess
from sdk import connect
from sdk.protocol import Request

KERNEL_OPTIONS = {"dtype": "float32", "kv-budget": 8192, "max-batch": 16, "arena-mb": 64, "log-level": "warning"}
SCRAPE_EVERY_S = 1.0
REPLY_TIMEOUT_MS = 600_000


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


class IdleAgents:
    """n agents on DEALER sockets of one context: hello, one 1-token call each (pipelined), then silent."""

    def __init__(self, address: str, n: int):
        self.context = zmq.Context()
        self.sockets = []
        for i in range(n):
            socket = self.context.socket(zmq.DEALER)
            socket.setsockopt(zmq.LINGER, 0)
            socket.connect(address)
            self.sockets.append(socket)
            self._send(socket, "hello", "h", {"name": f"idle-{i}"})
        self._replies("hello")
        for socket in self.sockets:
            self._send(socket, "llm.generate", 1, {"prompt": "Hi", "max_tokens": 1})
        self._replies("llm.generate")

    @staticmethod
    def _send(socket, msg_type: str, req_id, body: dict) -> None:
        socket.send(msgpack.packb({"v": PROTOCOL_VERSION, "id": req_id, "type": msg_type, "body": body}))

    def _replies(self, what: str) -> None:
        for socket in self.sockets:
            if not socket.poll(REPLY_TIMEOUT_MS):
                raise RuntimeError(f"no reply to {what}")
            reply = msgpack.unpackb(socket.recv())
            if reply["type"] != "result":
                raise RuntimeError(f"{what} failed: {reply['body']}")

    def close(self) -> None:
        for socket in self.sockets:
            socket.close()
        self.context.term()


def metrics_app(address: str) -> FastAPI:
    app = FastAPI()
    app.state.pool = AgentPool(address)
    errors.install(app)
    app.add_middleware(RequestGuard, keyring=None)
    app.include_router(metrics.router)
    return app


class Scraper:
    """GET /metrics through an in-process app, on an event loop of its own (one per thread that scrapes)."""

    def __init__(self, address: str):
        self.loop = asyncio.new_event_loop()
        self.app = metrics_app(address)
        transport = httpx.ASGITransport(app=self.app, client=("127.0.0.1", 40000))
        self.client = httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000")

    def scrape(self) -> int:
        response = self.loop.run_until_complete(self.client.get("/metrics"))
        response.raise_for_status()
        return len(response.content)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.run_until_complete(metrics.close(self.app))
        self.loop.run_until_complete(self.app.state.pool.close())
        self.loop.close()


def median_ms(fn, samples: int) -> float:
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def decode_rate(address: str, decoders: int, tokens: int) -> float:
    kernels = [connect(address, name=f"decoder-{i}") for i in range(decoders)]
    try:
        results: list[int] = [0] * decoders
        barrier = threading.Barrier(decoders + 1)

        def run(i: int) -> None:
            barrier.wait()
            done = kernels[i].generate("Write a long story about a lighthouse.", max_tokens=tokens, ignore_eos=True,
                                       full=True)  # fmt: skip
            results[i] = done.usage.completion_tokens

        threads = [threading.Thread(target=run, args=(i,)) for i in range(decoders)]
        for t in threads:
            t.start()
        barrier.wait()
        start = time.perf_counter()
        for t in threads:
            t.join()
        return sum(results) / (time.perf_counter() - start)
    finally:
        for k in kernels:
            k.close()


def polling(address: str, token: str, stop: threading.Event, counts: list[int]) -> None:
    scraper = Scraper(address)
    try:
        with connect(address, name="bench scraper", token=token) as operator:
            while not stop.is_set():
                operator._run(Request("kernel.top", Top(), lambda r: r.snapshot))
                scraper.scrape()
                counts[0] += 1
                stop.wait(SCRAPE_EVERY_S)
    finally:
        scraper.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--decoders", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)
    options = KERNEL_OPTIONS | ({"model": args.model} if args.model else {})
    with tempfile.TemporaryDirectory(prefix="observe-bench-") as workdir:
        address = f"ipc://{workdir}/kernel.sock"
        with KernelProcess(address, options, Path(workdir) / "aiosd.log") as kernel:
            token = runtime_dir.read_secret(admin_token_path(kernel.address)).decode()
            agents = IdleAgents(kernel.address, args.agents)
            try:
                rows = measure(kernel.address, token, args)
            finally:
                agents.close()
    print(f"\nobserve_bench: {args.agents} agents connected, {cpu_name()}; box shared with other work: compare ratios")
    print(f"{'measure':<46} {'median':>12} {'ratio':>8}")
    for name, value, unit, ratio in rows:
        print(f"{name:<46} {value:>9.2f} {unit:<2} {ratio:>8.2f}")


def measure(address: str, token: str, args) -> list[tuple[str, float, str, float]]:
    rows = []
    with connect(address, name="bench operator", token=token) as operator:
        top = operator._run(Request("kernel.top", Top(), lambda r: r.snapshot))
        listed = len(top["agents"])
        ping = median_ms(lambda: operator._run(Request("kernel.ping", Ping(), None)), args.samples)
        top_ms = median_ms(lambda: operator._run(Request("kernel.top", Top(), None)), args.samples)
        metrics_ms = median_ms(lambda: operator._run(Request("kernel.metrics", Metrics(), None)), args.samples)
        values = operator._run(Request("kernel.metrics", Metrics(), lambda r: r.metrics))
        render_ms = median_ms(lambda: metrics.render(values), args.samples)
    scraper = Scraper(address)
    try:
        size = scraper.scrape()
        scrape_ms = median_ms(scraper.scrape, args.samples)
    finally:
        scraper.close()
    rows += [
        ("kernel.ping round trip", ping, "ms", 1.0),
        (f"kernel.top round trip ({listed} agents listed)", top_ms, "ms", top_ms / ping),
        ("kernel.metrics round trip", metrics_ms, "ms", metrics_ms / ping),
        (f"GET /metrics scrape ({size // 1024} KiB)", scrape_ms, "ms", scrape_ms / ping),
        ("  of which Prometheus rendering (gateway side)", render_ms, "ms", render_ms / ping),
    ]
    alone, watched, scrapes = [], [], [0]
    for _ in range(args.runs):
        alone.append(decode_rate(address, args.decoders, args.tokens))
        stop = threading.Event()
        poller = threading.Thread(target=polling, args=(address, token, stop, scrapes))
        poller.start()
        try:
            watched.append(decode_rate(address, args.decoders, args.tokens))
        finally:
            stop.set()
            poller.join()
    base = statistics.median(alone)
    rows += [
        (f"decode, {args.decoders} agents, no scraper", base, "t/s", 1.0),
        (f"decode, top + /metrics every {SCRAPE_EVERY_S:g} s ({scrapes[0]} polls)", statistics.median(watched), "t/s",
         statistics.median(watched) / base),
    ]  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
