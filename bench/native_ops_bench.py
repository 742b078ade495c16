"""Decode tokens/s with the native layer ops and one-call layer loop against the torch ops, on one loaded model.

    python -m bench.native_ops_bench --model PATH [--dtype bfloat16] [--weights int4] [--batches 1,8] [--repeats 3]
                                     [--new-tokens 32] [--context 128]

For each batch size, `batch` sequences of --context prompt tokens decode --new-tokens each (bench.engine_bench's
ours_decode: timed from the first sampled token), first with the model's native ops (kernel/engine/cpu/layer_ops.py
NativeOps and, for pure-decode steps, its one-call layer loop), then with the torch ops (TorchOps, no native loop) on
the same weights in the same process, alternated --repeats times; the table gives the median tokens/s of each and
their ratio. The weights, KV cache and products are shared, so the ratio is the layer ops' and loop's alone, and it
holds on a loaded machine where the absolute numbers do not. The first line names the CPU.
"""

from __future__ import annotations

import argparse
import statistics

from kernel.engine.process_env import configure_process_env

configure_process_env()  # before torch loads, as aiosd's main and bench/engine_bench.py do

from bench.bandwidth import cpu_line  # noqa: E402
from bench.engine_bench import _prompts, ours_decode, print_table  # noqa: E402
from kernel.engine.cpu.engine import TorchEngine  # noqa: E402
from kernel.engine.cpu.layer_ops import NativeOps, TorchOps  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="GGUF file")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--weights", default=None, help="TorchEngine weights mode (default: the dtype's own float)")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--context", type=int, default=128)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    engine = TorchEngine.from_path(
        args.model, args.dtype, weights=args.weights, kv_budget_tokens=4096, max_batch=max(batches)
    )
    model = engine.model
    if not isinstance(model.ops, NativeOps):
        raise SystemExit(f"this model runs torch ops only (native gaps: {model.cfg.native_gaps() or 'none'})")
    native = (model.ops, model._native_stack)
    torch_ops = (TorchOps(), None)
    loop = "one-call loop" if model._native_stack is not None else "no one-call loop (a product has no native kind)"
    print(f"{cpu_line()}\n{args.model}: {model.cfg.family.value}, {args.dtype}, weights {args.weights}, {loop}")
    rows = []
    for batch in batches:
        prompts = _prompts(engine, batch, args.context)
        speeds: dict[str, list[float]] = {"native": [], "torch": []}
        for _ in range(args.repeats):
            for name, (ops, stack) in (("native", native), ("torch", torch_ops)):
                model.ops, model._native_stack = ops, stack
                speeds[name].append(ours_decode(engine, prompts, args.new_tokens))
        model.ops, model._native_stack = native
        nat, tor = (statistics.median(speeds[name]) for name in ("native", "torch"))
        rows.append((str(batch), f"{nat:.1f}", f"{tor:.1f}", f"{nat / tor:.2f}x"))
    print_table(("batch", "native tok/s", "torch ops tok/s", "native / torch"), rows)


if __name__ == "__main__":
    main()
