"""The machine's measured memory read bandwidth: what a batch-1 decode step, which reads every weight once, is bound by.

    python -m bench.bandwidth [--gib 1] [--repeats 5] [--threads 1,2]

Contract: read_bandwidth(threads) is the median bytes/s of summing a float32 tensor of `nbytes` (1 GiB by default: far
beyond any cache) with torch at that thread count; the caller's thread count is restored. A sum reads each byte once
and writes nothing, like a weight-streaming product (a copy also writes, and is what bench/engine_bench.py used
before, counting read + write). Medians, not bests: on a shared machine a best-of hides the load the engine also sees.
cpu_line() names the CPU and the SIMD flags that matter for the kernels, for every result printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

GIB = 1 << 30
_SIMD_FLAGS = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
)


def read_bandwidth(threads: int, nbytes: int = GIB, repeats: int = 5) -> float:
    """Median bytes/s of a tensor sum at `threads` threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        data = torch.ones(nbytes // 4)
        data.sum()  # first touch and thread start-up outside the timing
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            data.sum()
            times.append(time.perf_counter() - start)
        return nbytes / statistics.median(times)
    finally:
        torch.set_num_threads(previous)


def bandwidth_table(thread_counts: list[int], nbytes: int = GIB, repeats: int = 5) -> dict[int, float]:
    return {n: read_bandwidth(n, nbytes, repeats) for n in thread_counts}


def cpu_line() -> str:
    """'AMD EPYC ... | 2 cores usable | avx2 fma ... avx512_vnni' from /proc/cpuinfo (Linux), else the platform's
    name."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    present = " ".join(flag for flag in _SIMD_FLAGS if flag in flags) or "no AVX2"
    return f"{model} | {len(os.sched_getaffinity(0))} cores usable | {present}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", default=None, help="comma-separated (default: 1 and all usable cores)")
    args = parser.parse_args()
    counts = [int(n) for n in args.threads.split(",")] if args.threads else sorted({1, len(os.sched_getaffinity(0))})
    print(cpu_line())
    for n, rate in bandwidth_table(counts, int(args.gib * GIB), args.repeats).items():
        print(f"read bandwidth, {n} thread(s): {rate / 1e9:.1f} GB/s (median of {args.repeats} sums)")


if __name__ == "__main__":
    main()
