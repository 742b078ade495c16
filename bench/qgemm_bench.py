"""Block-quantized products (kernel/engine/cpu/block_weights.py) per GGUF format and instruction set.

    python -m bench.qgemm_bench [--repeats 5] [--threads 2] [--stream-mb 192] [--isas avx2,avx512] [--engine]

Decode (1 and 8 rows): a stack of distinct 2048x2048 matrices holding --stream-mb MiB of weights (past the last-level
cache, so each call streams its weights from memory, as a model's decode step does) is multiplied in turn; GB/s =
weight bytes / time, and its fraction of the machine's read bandwidth measured in the same run (bench.bandwidth:
a 1 GiB tensor sum at the same threads); Q8_0 / Q4_0 / Q4_1 grouped by 16 rows (the default) and with rows apart
("apart": AIOS_QGEMM_GROUPED=0, the row kernels). Prompt rows (256): one 2048x2048 and one 8192x2048 product
against oneDNN's bfloat16 product of the same weights (the opt-in prefill copy, AIOS_PREFILL_COPY=1), rows/s and the
ratio. Weights: gguf's quantizer for the 32-blocks formats, random bytes with sane fp16 scales for the K-quants
(gguf has no quantizer for them; speed does not depend on the values). Every candidate of a case is timed in turn
in each round, the median of the rounds reported: on a shared machine only the ratios in one run mean anything.
--engine: decode tok/s of the default model (SmolLM2 GGUF) at batch 1 and 8, int4 and int8 modes, torch's kernels
(AIOS_QGEMM=0) vs the block products, interleaved the same way.
--pool [GGUF]: decode tok/s of a model (default the bundled one; e.g. bench.make_gguf's 1.7B Q4_0) in int4 mode at 1
and 2 threads, batch 1 and 8, the decode layer loop as one OpenMP region per op (AIOS_NATIVE_POOL=0) vs one job on
the native worker pool (the default), interleaved, the adaptive thread count held fixed; batch 1 also as a fraction
of the read bandwidth at the same threads (weight bytes per token x tok/s). The pool (its products cut into tasks by
rows, the default) also with tasks by bytes (AIOS_POOL_TASKS=bytes), shrinking toward a phase's end (=guided), and
with the last tasks reading ahead the next product's first ones (AIOS_POOL_PREFETCH=1); --pool-threads picks the
thread counts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize, quantize

from bench.bandwidth import cpu_line, read_bandwidth
from kernel.engine.cpu.block_weights import GGUF_FORMATS, RAW_BLOCKS, BlockLinear, Isa, supported_isas
from kernel.engine.cpu.linear import Linear

FORMATS = [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q4_K, Q.Q5_K, Q.Q6_K]
DECODE_ROWS = [1, 8]
PROMPT_ROWS = 256
PROMPT_SHAPES = [(2048, 2048), (8192, 2048)]
ISAS: list[str] = []  # --isas: the instruction sets to time (default: every one the CPU has)


def gguf_bytes(qtype: Q, n: int, k: int, rng) -> np.ndarray:
    """[n, row bytes] uint8 of a tensor in qtype."""
    if qtype not in (Q.Q4_K, Q.Q5_K, Q.Q6_K):
        return quantize((rng.standard_normal((n, k)) * 0.02).astype(np.float32), qtype)
    per_block, block_bytes = RAW_BLOCKS[GGUF_FORMATS[qtype]]
    raw = rng.integers(0, 256, (n, k // per_block, block_bytes), dtype=np.uint8)
    scale = (np.abs(rng.standard_normal((n, k // per_block))) * 1e-3).astype(np.float16)[..., None].view(np.uint8)
    for at in (0, 2) if qtype in (Q.Q4_K, Q.Q5_K) else (208,):
        raw[..., at : at + 2] = scale
    return raw.reshape(n, -1)


def _time(fn, min_seconds: float = 0.2) -> float:
    fn()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and calls >= 3:
            return elapsed / calls


def _isas() -> list[Isa]:
    return [isa for isa in supported_isas() if not ISAS or isa.name.lower() in ISAS]


def decode_cases(repeats: int, stream_mb: int, bandwidth: float) -> None:
    rng = np.random.default_rng(0)
    n = k = 2048
    print(f"\ndecode: stacks of {n}x{k} matrices, {stream_mb} MiB of weights each; GB/s (fraction of read bandwidth)")
    for qtype in FORMATS:
        raw = gguf_bytes(qtype, n, k, rng)
        count = max(2, stream_mb * 2**20 // raw.nbytes)
        stacks = {}
        for isa in _isas():
            stack = [BlockLinear.from_gguf(raw.copy(), qtype, (n, k), isa) for _ in range(count)]
            if stack[0].grouped:  # the same weights with rows apart (the row kernels) beside the grouped ones
                stacks[f"{isa.name.lower()} apart"] = _ungrouped(raw, qtype, (n, k), isa, count)
            stacks[isa.name.lower()] = stack
        nbytes = sum(p.nbytes for p in next(iter(stacks.values())))
        for rows in DECODE_ROWS:
            x = torch.randn(rows, k).to(torch.bfloat16)
            times = {isa: [] for isa in stacks}
            for _ in range(repeats):
                for isa, stack in stacks.items():
                    times[isa].append(_time(lambda stack=stack, x=x: [p(x) for p in stack]))
            cells = []
            for isa in stacks:
                rate = nbytes / statistics.median(times[isa]) / 1e9
                cells.append(f"{isa} {rate:6.1f} GB/s ({rate * 1e9 / bandwidth:4.0%})")
            print(f"  {qtype.name:>5} rows {rows}:  " + "  ".join(cells), flush=True)


def _ungrouped(raw: np.ndarray, qtype: Q, shape: tuple[int, int], isa: Isa, count: int) -> list[BlockLinear]:
    """`count` products of the bytes with rows apart (AIOS_QGEMM_GROUPED=0 while they are packed)."""
    previous = os.environ.get("AIOS_QGEMM_GROUPED")
    os.environ["AIOS_QGEMM_GROUPED"] = "0"
    try:
        return [BlockLinear.from_gguf(raw.copy(), qtype, shape, isa) for _ in range(count)]
    finally:
        if previous is None:
            del os.environ["AIOS_QGEMM_GROUPED"]
        else:
            os.environ["AIOS_QGEMM_GROUPED"] = previous


def prompt_cases(repeats: int) -> None:
    rng = np.random.default_rng(1)
    print(f"\nprompt rows ({PROMPT_ROWS}): rows/s, and the ratio to oneDNN's bfloat16 product of the same weights")
    for n, k in PROMPT_SHAPES:
        x = torch.randn(PROMPT_ROWS, k).to(torch.bfloat16)
        for qtype in FORMATS:
            raw = gguf_bytes(qtype, n, k, rng)
            wide = torch.from_numpy(dequantize(raw, qtype).reshape(n, k)).to(torch.bfloat16)
            candidates = {"bf16-copy": Linear(wide)}
            for isa in _isas():
                candidates[isa.name.lower()] = BlockLinear.from_gguf(raw, qtype, (n, k), isa)
            times = {name: [] for name in candidates}
            for _ in range(repeats):
                for name, product in candidates.items():
                    times[name].append(_time(lambda product=product, x=x: product(x)))
            base = statistics.median(times["bf16-copy"])
            cells = [f"bf16-copy {PROMPT_ROWS / base:8.0f}"]
            for name in list(candidates)[1:]:
                t = statistics.median(times[name])
                cells.append(f"{name} {PROMPT_ROWS / t:8.0f} ({base / t:4.2f}x)")
            print(f"  {n:>5}x{k:<5} {qtype.name:>5}:  " + "  ".join(cells), flush=True)


def engine_cases(repeats: int, tokens: int = 48) -> None:
    from kernel.engine.core.interface import EngineRequest, SamplingParams
    from kernel.engine.cpu.engine import TorchEngine

    def decode_rate(engine, batch: int) -> float:
        prompt = engine.tokenize("The kernel schedules agents and their calls, one step at a time.")
        for i in range(batch):
            engine.add(EngineRequest(f"r{i}", list(prompt), SamplingParams(max_tokens=tokens, ignore_eos=True)))
        engine.step()  # the prompts' prefill
        produced, start = 0, time.perf_counter()
        while engine.has_work():
            produced += sum(1 for event in engine.step() if event.token_id >= 0)
        return produced / (time.perf_counter() - start)

    engines = {}
    for mode in ("int4", "int8"):
        for path in ("torch", "qgemm"):
            os.environ["AIOS_QGEMM"] = "0" if path == "torch" else "1"
            engines[f"{mode}-{path}"] = TorchEngine.from_path(
                None, "bfloat16", weights=mode, kv_budget_tokens=4096, max_batch=8
            )
    os.environ.pop("AIOS_QGEMM")
    for batch in (1, 8):
        rates = {name: [] for name in engines}
        for _ in range(repeats):
            for name, engine in engines.items():
                rates[name].append(decode_rate(engine, batch))
        print(
            f"decode batch {batch}: "
            + "  ".join(f"{name} {statistics.median(r):.1f} tok/s" for name, r in rates.items()),
            flush=True,
        )


# name → the environment of a way to run the decode layer loop (every variable named anywhere is unset otherwise)
POOL_WAYS = {
    "op loop": {"AIOS_NATIVE_POOL": "0"},
    "pool": {},
    "bytes": {"AIOS_POOL_TASKS": "bytes"},
    "guided": {"AIOS_POOL_TASKS": "guided"},
    "read ahead": {"AIOS_POOL_PREFETCH": "1"},
}


def pool_cases(repeats: int, model: str | None, thread_counts: list[int], tokens: int = 24) -> None:
    from kernel.engine.core.interface import EngineRequest, SamplingParams
    from kernel.engine.cpu.engine import TorchEngine

    engine = TorchEngine.from_path(
        model, "bfloat16", weights="int4", kv_budget_tokens=4096, max_batch=8, adaptive_threads=False
    )
    prompt = engine.tokenize("The kernel schedules agents and their calls, one step at a time.")
    nbytes = engine.model.weight_nbytes()

    def decode_rate(batch: int) -> float:
        for i in range(batch):
            request = f"p{time.monotonic_ns()}-{i}"
            engine.add(EngineRequest(request, list(prompt), SamplingParams(max_tokens=tokens, ignore_eos=True)))
        engine.step()  # the prompts' prefill
        produced, start = 0, time.perf_counter()
        while engine.has_work():
            produced += sum(1 for event in engine.step() if event.token_id >= 0)
        return produced / (time.perf_counter() - start)

    names = {name for env in POOL_WAYS.values() for name in env}
    print(f"\ndecode layer loop, {model or 'bundled model'} int4 ({nbytes / 1e9:.2f} GB of weights read per step)")
    for threads in thread_counts:
        bandwidth = read_bandwidth(threads)
        torch.set_num_threads(threads)
        for batch in (1, 8):
            rates = {way: [] for way in POOL_WAYS}
            for _ in range(repeats):
                for way, env in POOL_WAYS.items():
                    for name in names:
                        os.environ.pop(name, None)
                    os.environ.update(env)
                    rates[way].append(decode_rate(batch))
            base = statistics.median(rates["op loop"])
            cells = []
            for way in POOL_WAYS:
                rate = statistics.median(rates[way])
                share = f", {rate * nbytes / bandwidth:.0%} of read bw" if batch == 1 else ""
                cells.append(f"{way} {rate:6.1f} tok/s ({rate / base:4.2f}x{share})")
            print(f"  threads {threads} batch {batch}:  " + "  ".join(cells), flush=True)
    for name in names:
        os.environ.pop(name, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--stream-mb", type=int, default=192, help="weights per decode stack (past the LLC)")
    parser.add_argument("--decode", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--prompt", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--isas", default="", help="comma-separated: scalar,avx2,avx512 (default: all the CPU has)")
    parser.add_argument("--engine", action="store_true", help="also the engine's decode tok/s, torch's kernels vs ours")
    parser.add_argument(
        "--pool",
        nargs="?",
        const="",
        default=None,
        metavar="GGUF",
        help="also the decode layer loop, OpenMP per op vs the native pool (a GGUF; default bundled)",
    )
    parser.add_argument("--pool-threads", default="1,2", help="thread counts of --pool")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ISAS[:] = [name for name in args.isas.split(",") if name]
    threads = torch.get_num_threads()
    print(cpu_line())
    print(
        f"threads {threads}; ISAs {[i.name for i in supported_isas()]}; median of {args.repeats} rounds; load",
        open("/proc/loadavg").read().split()[:3],
        flush=True,
    )
    bandwidth = read_bandwidth(threads)
    print(f"read bandwidth ({threads} threads, 1 GiB sum): {bandwidth / 1e9:.1f} GB/s", flush=True)
    if args.decode:
        decode_cases(args.repeats, args.stream_mb, bandwidth)
    if args.prompt:
        prompt_cases(args.repeats)
    if args.engine:
        engine_cases(args.repeats)
    if args.pool is not None:
        pool_cases(args.repeats, args.pool or None, [int(t) for t in args.pool_threads.split(",")])


if __name__ == "__main__":
    main()
