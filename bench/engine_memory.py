"""The CPU engine's resident memory next to its model file's size, and its decode speed, each configuration in a fresh
process.

    python -m bench.engine_memory [--model PATH ...] [--weights auto,default,int4] [--dtype bfloat16] [--tree DIR ...]
                                  [--new-tokens 32] [--kv-budget 2048] [--threads N]

For each model x weights mode x source tree, a child process imports the engine, notes its resident memory (the
baseline: Python, torch, the native ops), loads TorchEngine.from_path, and reads /proc/self/status: VmHWM (peak) and
VmRSS (steady) after the load and again after a batch-1 decode of --new-tokens tokens and a batch-8 one. "default" is
no --weights for the engine (the compute dtype's own float), aiosd's default with --dtype bfloat16 is auto. Printed per
row: the mode the engine ran, the peak during the load (VmHWM once loaded: the load is everything up to then, auto's
measurement included), the peak over the whole run and the steady growth over the baseline, the KV cache's own bytes,
(load peak - KV) / file and (steady - KV) / file — the numbers the engine's memory target is about (≤ 1.3x the
file) — and decode tok/s at batch 1 and 8. auto's result is cached per CPU and model (quant_select.WeightsCache): each
child gets an empty cache directory, so auto measures in every row.

Measured (AMD EPYC Zen 4, 2 cores, shared with other work; --new-tokens 16, kv budget 2048, bfloat16), auto before and
after its reference became the file's own blocks, side by side in one run (load peak GB, (load peak - KV)/file,
steady, load s): the random 1.7B Q4_0 file (0.96 GB), before: fp32 reference built, 7.20 GB, 7.04x, 5.32 GB, 479 s;
after: the stored int4, nothing measured, 1.49 GB, 1.13x, 1.50 GB, 24 s; the default (bf16) 3.88 GB. SmolLM2 135M
Q4_1 (0.10 GB): before 0.75 GB (7.15x), after 0.23 GB (1.84x: the runtime's fixed ~80 MB weigh on a 100 MB file).

--tree runs the same measurement with another checkout's code first on sys.path (e.g. `git archive <commit> | tar -x
-C /tmp/before`), so "before" and "after" are measured side by side in one run, on the same box: on a machine shared
with other work, compare the ratios of one run, not absolute tok/s across runs. The first line names the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.bandwidth import cpu_line

_CHILD = r"""
import json, sys, time
sys.path.insert(0, {tree!r})

def status():
    fields = {{}}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) * 1024
    return fields

try:  # the OpenMP wait policy, as aiosd sets it, before torch loads (older trees set it on import)
    from kernel.engine.process_env import configure_process_env
    configure_process_env()
except ImportError:
    import kernel.engine  # noqa: F401
import torch
from kernel.engine.cpu.native import load
from kernel.engine.cpu.engine import TorchEngine
from kernel.engine.core.interface import EngineRequest, SamplingParams
load()
base = status()
start = time.perf_counter()
engine = TorchEngine.from_path({model!r}, dtype={dtype!r}, weights={weights!r}, kv_budget_tokens={kv},
                               threads={threads})
load_s = time.perf_counter() - start
loaded = status()
ids = engine.tokenize(" ".join(f"Agent {{i}} asks the kernel for memory." for i in range(40)))

def decode(n_seqs, tokens):
    for i in range(n_seqs):
        engine.add(EngineRequest(f"r{{n_seqs}}-{{i}}", ids[i * 3 : i * 3 + 24], SamplingParams(max_tokens=tokens,
                                                                                          ignore_eos=True)))
    started = set()
    while len(started) < n_seqs:
        started.update(e.req_id for e in engine.step())
    t0, produced = time.perf_counter(), 0
    while engine.has_work():
        produced += len(engine.step())
    return produced / (time.perf_counter() - t0)

decode(1, 4)  # warm-up: first calls pay one-off allocation and kernel selection
tok1 = decode(1, {tokens})
tok8 = decode(8, {tokens})
after = status()
print(json.dumps(dict(base=base, loaded=loaded, after=after, load_s=load_s, tok1=tok1, tok8=tok8,
                      kv=engine.kv.data.numel() * engine.kv.data.element_size(), mode=engine.weights)))
"""


def measure(tree: Path, model: Path, weights: str, dtype: str, kv: int, tokens: int, threads: int | None) -> dict:
    mode = None if weights == "default" else weights
    code = _CHILD.format(
        tree=str(tree), model=str(model), dtype=dtype, weights=mode, kv=kv, tokens=tokens, threads=threads
    )
    with tempfile.TemporaryDirectory(prefix="aios-bench-cache-") as cache:
        env = dict(os.environ, PYTHONPATH=str(tree), AIOS_CACHE_DIR=cache)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tree)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def row(label: str, model: Path, weights: str, r: dict) -> tuple[str, ...]:
    size = model.stat().st_size
    if "error" in r:
        return (label, model.name, weights, "error: " + r["error"][:80], *[""] * 10)
    base = r["base"]["VmRSS"]
    load_peak = r["loaded"]["VmHWM"] - base
    peak = max(r["loaded"]["VmHWM"], r["after"]["VmHWM"]) - base
    steady = r["after"]["VmRSS"] - base
    gb = lambda n: f"{n / 1e9:.2f}"
    return (
        label,
        model.name,
        weights,
        r["mode"],
        gb(size),
        gb(load_peak),
        gb(peak),
        gb(steady),
        gb(r["kv"]),
        f"{(load_peak - r['kv']) / size:.2f}x",
        f"{(steady - r['kv']) / size:.2f}x",
        f"{r['load_s']:.1f}",
        f"{r['tok1']:.1f}",
        f"{r['tok8']:.1f}",
    )


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    for line in [header, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)))


def main(argv=None) -> None:
    from kernel.engine.loading.checkpoint import default_model_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None, help="GGUF files (default: the bundled model)")
    parser.add_argument("--weights", default="auto,default", help="modes, comma-separated; default: no --weights")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--tree", action="append", default=[], help="other source trees to measure first")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--kv-budget", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    models = [Path(m) for m in (args.model or [default_model_path()])]
    trees = [Path(t).resolve() for t in args.tree] + [Path(__file__).resolve().parent.parent]
    print(cpu_line(), f"| threads {args.threads or 'default'} | dtype {args.dtype} | kv budget {args.kv_budget}")
    header = ("tree", "model", "asked", "mode", "file GB", "load peak GB", "peak GB", "steady GB", "KV GB",
              "(load peak-KV)/file", "(steady-KV)/file", "load s", "tok/s b1", "tok/s b8")  # fmt: skip
    rows = []
    for model in models:
        for weights in args.weights.split(","):
            for tree in trees:
                r = measure(tree, model, weights, args.dtype, args.kv_budget, args.new_tokens, args.threads)
                rows.append(row(tree.name, model, weights, r))
                print(" | ".join(rows[-1]), flush=True)
    print()
    print_table(header, rows)
    print("load peak / peak / steady: growth of VmHWM once loaded / VmHWM at the end / VmRSS at the end over the")
    print("process's resident memory before the load (Python, torch, the native ops); the file's mapped pages count")


if __name__ == "__main__":
    main()
