"""Block-quantized products (kernel/engine/cpu/block_weights.py) against torch's int4/int8 kernels and oneDNN bf16.

    python -m bench.qgemm_bench [--repeats 7] [--engine]

Products: y = x Wᵀ for W of 2048x2048 and 8192x2048 (out x in) in Q8_0, Q4_0 and Q4_1 (random weights quantized by
gguf), x bfloat16 at 1 and 8 rows (decode: bandwidth-bound, GB/s = weight bytes / time) and 256 rows (a prompt
chunk). Every candidate of one case is timed in turn in each round (ratios side by side on a shared machine), the
median of the rounds reported. --engine: decode tok/s of the default model (SmolLM2 GGUF) at batch 1 and 8, int4 and
int8 modes, torch's kernels (AIOS_QGEMM=0) vs the block products, interleaved the same way.
llama.cpp's own matrix products are not reachable from Python here (xllamacpp runs a whole server), so its numbers
come from the engine comparison (bench.engine_bench --peer llamacpp), not from this file.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from gguf import GGMLQuantizationType
from gguf.quants import quantize

from kernel.engine.cpu.block_weights import BlockFormat, BlockLinear, supported_isas
from kernel.engine.cpu.linear import Linear
from kernel.engine.cpu.quant_linear import Int4Linear, Int8Linear
from kernel.engine.loading.quant_tensor import from_q4_0, from_q4_1, from_q8_0, quantize_int8_rows

SHAPES = [(2048, 2048), (8192, 2048)]
ROWS = [1, 8, 256]
FORMATS = {
    BlockFormat.Q8_0: (GGMLQuantizationType.Q8_0, from_q8_0),
    BlockFormat.Q4_0: (GGMLQuantizationType.Q4_0, from_q4_0),
    BlockFormat.Q4_1: (GGMLQuantizationType.Q4_1, from_q4_1),
}


def _time(fn, x, min_seconds: float = 0.15) -> float:
    fn(x)
    calls, start = 0, time.perf_counter()
    while True:
        fn(x)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and calls >= 3:
            return elapsed / calls


def product_cases(repeats: int) -> None:
    rng = np.random.default_rng(0)
    print(f"threads {torch.get_num_threads()}; ISAs {[i.name for i in supported_isas()]}; median of {repeats} rounds")
    print(f"{'shape':>11} {'fmt':>5} {'rows':>4}  " + "  ".join(f"{n:>22}" for n in ("candidate ms (GB/s)",)))
    for n, k in SHAPES:
        w = (rng.standard_normal((n, k)) * 0.02).astype(np.float32)
        bf16 = Linear(torch.from_numpy(w).to(torch.bfloat16))
        for fmt, (qtype, decode) in FORMATS.items():
            gq = decode(quantize(w, qtype))
            candidates = {f"ours-{isa.name.lower()}": BlockLinear(gq, isa) for isa in supported_isas()}
            if fmt is BlockFormat.Q8_0:
                candidates["torch-int8"] = Int8Linear(quantize_int8_rows(gq.dequantize()))
            else:
                candidates["torch-int4"] = Int4Linear(gq)
            candidates["onednn-bf16"] = bf16
            for rows in ROWS:
                x = torch.from_numpy(rng.standard_normal((rows, k)).astype(np.float32)).to(torch.bfloat16)
                times = {name: [] for name in candidates}
                for _ in range(repeats):
                    for name, product in candidates.items():
                        times[name].append(_time(product, x))
                cells = []
                for name, product in candidates.items():
                    t = statistics.median(times[name])
                    cells.append(f"{name} {t * 1e3:.3f} ({product.nbytes / t / 1e9:.1f})")
                print(f"{n:>5}x{k:<5} {fmt.name:>5} {rows:>4}  " + "  ".join(cells), flush=True)


def engine_cases(repeats: int, tokens: int = 48) -> None:
    from kernel.engine.core.interface import EngineRequest, SamplingParams
    from kernel.engine.cpu.torch_engine import TorchEngine

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--engine", action="store_true", help="also the engine's decode tok/s, old path vs new")
    parser.add_argument("--products", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--shapes", default="2048x2048,8192x2048")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    SHAPES[:] = [tuple(int(v) for v in shape.split("x")) for shape in args.shapes.split(",")]
    print("load:", open("/proc/loadavg").read().split()[:3], flush=True)
    if args.products:
        product_cases(args.repeats)
    if args.engine:
        engine_cases(args.repeats)


if __name__ == "__main__":
    main()
