"""Syscall round trip: a no-op syscall (kernel.ping) through the SDK and aiosd, next to a raw pyzmq DEALER/ROUTER
echo between two processes, measured in the same run. Target: SDK p50 at most 2x the raw p50.

    python -m bench.syscall_bench [--count 5000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

from kernel.launch import KernelProcess
from sdk import connect

ECHO_SERVER = """
import sys, zmq
router = zmq.Context().socket(zmq.ROUTER)
router.bind(sys.argv[1])
print("ready", flush=True)
while True:
    router.send_multipart(router.recv_multipart())
"""


def _percentiles(samples_s: list[float]) -> dict[str, float]:
    ordered = sorted(samples_s)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6  # noqa: E731  (µs)
    return {"p50": pick(0.50), "p99": pick(0.99), "mean": statistics.fmean(ordered) * 1e6}


def timed(call, count: int, warmup: int = 0) -> list[float]:
    """Seconds per call of `call`, `count` times after `warmup` untimed calls."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples


def raw_zmq_round_trips(address: str, count: int, warmup: int) -> list[float]:
    server = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, address], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        context = zmq.Context()
        dealer = context.socket(zmq.DEALER)
        dealer.connect(address)

        def ping():
            dealer.send(b"ping")
            dealer.recv()

        samples = timed(ping, count, warmup)
        dealer.close(linger=0)
        context.term()
        return samples
    finally:
        server.kill()
        server.wait()


def sdk_round_trips(address: str, count: int, warmup: int) -> list[float]:
    with connect(address, name="syscall-bench") as kernel:
        return timed(kernel.ping, count, warmup)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.syscall_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=500)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aios-syscall-bench-") as workdir:
        raw = _percentiles(raw_zmq_round_trips(f"ipc://{workdir}/echo.sock", args.count, args.warmup))
        with KernelProcess(f"ipc://{workdir}/kernel.sock", {}, Path(workdir) / "aiosd.log") as kernel:
            sdk = _percentiles(sdk_round_trips(kernel.address, args.count, args.warmup))
    print(f"no-op syscall round trip, {args.count} calls after {args.warmup} warm-up, ipc:// transport")
    print(f"{'path':<34}{'p50 µs':>10}{'p99 µs':>10}{'mean µs':>10}{'p50 ratio':>11}")
    for name, row in (("raw pyzmq DEALER/ROUTER echo", raw), ("SDK kernel.ping via aiosd", sdk)):
        print(f"{name:<34}{row['p50']:>10.1f}{row['p99']:>10.1f}{row['mean']:>10.1f}{row['p50'] / raw['p50']:>10.2f}x")
    print(f"target: SDK p50 <= 2.00x raw -> {'met' if sdk['p50'] <= 2 * raw['p50'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
