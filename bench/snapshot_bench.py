"""Context switch cost: snapshot (engine KV → shared-memory arena) and restore (arena → engine) next to recompute
(re-prefilling the same tokens, the text-based baseline), on the default model, through the real ContextManager.

    python -m bench.snapshot_bench [--sizes 256 1024 2048] [--runs 5] [--dtype float32]

Each run prefills a fresh random context (distinct tokens, so the engine's prefix cache cannot serve it) and times:
recompute = admission until the first sampled token; snapshot = ContextManager.preempt (copy out, header, free slots);
restore = ContextManager.resume (copy back in). Medians over the runs; ratios are against recompute from the same run.
The memcpy column is the machine's ceiling for the same bytes: a plain copy from process memory into the arena.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from kernel.context.arena import Arena
from kernel.context.manager import ContextManager
from kernel.engine.core.interface import EngineRequest, SamplingParams
from kernel.engine.factory import load_engine
from kernel.engine.process_env import configure_process_env

TARGET_SPEEDUP_AT_1K = 50.0
TARGET_GBPS = 5.0


def one_run(engine, context: ContextManager, req_id: str, prompt: list[int]) -> tuple[float, float, float, int]:
    """(recompute s, snapshot s, restore s, KV bytes) for one context of len(prompt) tokens."""
    params = SamplingParams(max_tokens=4, ignore_eos=True)
    start = time.perf_counter()
    context.admit("bench", EngineRequest(req_id, prompt, params))
    output: list[int] = []
    while not output:
        output += [event.token_id for event in engine.step() if event.req_id == req_id]
    recompute = time.perf_counter() - start
    kv_bytes = engine.kv_nbytes(req_id)

    start = time.perf_counter()
    where = context.preempt(req_id)
    snapshot = time.perf_counter() - start
    if where != "snapshot":
        raise SystemExit(f"the arena could not hold a {kv_bytes}-byte snapshot: raise --arena-mb")

    start = time.perf_counter()
    context.resume(EngineRequest(req_id, prompt, params, output))
    restore = time.perf_counter() - start
    engine.step()  # the restored sequence carries on
    context.drop_request(req_id)
    return recompute, snapshot, restore, kv_bytes


def memcpy_seconds(nbytes: int, runs: int) -> float:
    """Median time of one plain copy of nbytes from process memory into a pre-faulted arena block."""
    source = memoryview(bytearray(nbytes))
    with Arena(nbytes, kernel_id=f"{os.getpid()}.memcpy") as arena:
        block = arena.alloc(nbytes)
        dst = arena.view(block, 0, nbytes)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            dst[:] = source
            times.append(time.perf_counter() - start)
        dst.release()
    return statistics.median(times)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 2048], help="context lengths in tokens")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--arena-mb", type=int, default=256)
    args = parser.parse_args(argv)
    if args.runs <= 0 or min(args.sizes) <= 0:
        parser.error("--runs and --sizes must be positive")

    configure_process_env()  # this process runs the engine: its settings before torch loads
    engine = load_engine(dtype=args.dtype, kv_budget_tokens=max(args.sizes) + 64, max_batch=2)
    rng = random.Random(0)
    rows, checks = [], []
    with ContextManager(engine, args.arena_mb << 20, retention=False, kernel_id=f"{os.getpid()}.bench") as context:
        one_run(engine, context, "warmup", [rng.randrange(1000, 40000) for _ in range(min(args.sizes))])
        for size in args.sizes:
            runs = [
                one_run(engine, context, f"n{size}-{i}", [rng.randrange(1000, 40000) for _ in range(size)])
                for i in range(args.runs)
            ]
            recompute, snapshot, restore = (statistics.median(r[k] for r in runs) for k in range(3))
            kv_bytes = runs[0][3]
            speedup, restore_gbps = recompute / restore, kv_bytes / restore / 1e9
            rows.append(
                [
                    str(size),
                    f"{kv_bytes / 2**20:.1f}",
                    f"{recompute * 1e3:.1f}",
                    f"{snapshot * 1e3:.2f}",
                    f"{kv_bytes / snapshot / 1e9:.2f}",
                    f"{restore * 1e3:.2f}",
                    f"{restore_gbps:.2f}",
                    f"{kv_bytes / memcpy_seconds(kv_bytes, args.runs) / 1e9:.2f}",
                    f"{recompute / snapshot:.0f}x",
                    f"{speedup:.0f}x",
                ]
            )
            if size == 1024:
                checks.append(
                    (
                        f"restore >= {TARGET_SPEEDUP_AT_1K:.0f}x faster than recompute at 1k tokens",
                        speedup >= TARGET_SPEEDUP_AT_1K,
                        f"{speedup:.0f}x",
                    )
                )
            checks.append(
                (
                    f"restore >= {TARGET_GBPS:.0f} GB/s at {size} tokens",
                    restore_gbps >= TARGET_GBPS,
                    f"{restore_gbps:.2f} GB/s",
                )
            )
    print(
        f"model {engine.layout().model_id}, {args.dtype}, {engine.layout().bytes_per_token()} KV bytes/token, "
        f"median of {args.runs} runs, {os.cpu_count()} cores\n"
    )
    print(
        table(
            [
                "tokens",
                "KV MiB",
                "recompute ms",
                "snapshot ms",
                "snapshot GB/s",
                "restore ms",
                "restore GB/s",
                "memcpy GB/s",
                "recompute/snapshot",
                "recompute/restore",
            ],
            rows,
        )
    )
    print()
    print(
        table(["target", "result", "measured"], [[name, "PASS" if ok else "FAIL", value] for name, ok, value in checks])
    )
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
