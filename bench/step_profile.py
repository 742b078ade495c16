"""Where a decode step's time goes: matmuls, attention, norms/rotary/activations, sampling, and the Python around them.

    python -m bench.step_profile [--dtype float32] [--weights MODE] [--batches 1,8] [--steps 24] [--repeats 3]
                                 [--temperature 0] [--threads N]

Each batch of sequences with CONTEXT-token prompts is prefilled, then decode steps are timed twice:
  * plain wall clock (no profiler), split by phase: schedule + step batch build, model forward, token choice
    (grammar masks + sampling), emit (bookkeeping, detokenizing);
  * under torch.profiler, for the self time of each aten op inside the forward, grouped by kind, and the forward's
    wall time under the profiler.
The profiler slows every op down by its own bookkeeping, so its times are not added to the plain ones: each kind
gets the share of the plain forward time that its self time has of the profiled forward's wall time, and "Python +
dispatch" the share of the profiled wall time that no op accounts for (the interpreter, torch's dispatcher between
kernels, and the profiler's own per-op cost, which this estimate cannot separate: read it as an upper bound). "ops"
is the number of aten ops the forward dispatches per step. Every number is the median of --repeats runs.

    python -m bench.step_profile --pool-phases [--model GGUF] [--weights int4] [--batches 1] [--steps 24]

instead times a pure-decode step's layer loop on the native worker pool from the inside (AIOS_POOL_PROFILE=1, set
here before the library loads): per kind of phase (norm, qkv, attend, quant, o, mlp norm, gate_up, silu, down; the
order of decode_pool.cpp) and thread, ms per step running tasks, waiting for the phase's end (spin + sleep) and of
that asleep on the futex, and tasks per step; then each thread's lag joining the step and leaving it.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections import defaultdict
from contextlib import contextmanager

from kernel.engine.process_env import configure_process_env

# This script runs an engine in its own process: the settings its runtimes read when torch loads, set first.
configure_process_env()

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from bench.text import words_text  # noqa: E402
from kernel.engine.core.interface import EngineRequest, SamplingParams  # noqa: E402
from kernel.engine.cpu.engine import TorchEngine  # noqa: E402

CONTEXT = 200

# op name (aten, mkldnn, or the engine's native aios_cpu ops) → kind. Composite ops (linear → mm) have no self time of
# their own, so mapping both is harmless.
KINDS = {
    "matmul": (
        "aten::mm",
        "aten::addmm",
        "aten::linear",
        "aten::matmul",
        "aten::bmm",
        "mkldnn::_linear_pointwise",
        "aten::_weight_int4pack_mm_for_cpu",
        "aten::_weight_int8pack_mm",
        "aten::_weight_int4pack_mm",
    ),
    "attention": (
        "aten::scaled_dot_product_attention",
        "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_scaled_dot_product_attention_math",
        "aten::index_select",
        "aten::index_copy_",
        "aten::softmax",
        "aten::_softmax",
        "aten::baddbmm",
        "aios_cpu::decode_attention",
    ),
    "norms/rotary/act": (
        "aten::rms_norm",
        "aten::_fused_rms_norm",
        "aten::mul",
        "aten::add",
        "aten::roll",
        "aten::silu",
        "aten::neg",
        "aten::pow",
        "aten::mean",
        "aten::rsqrt",
        "aten::add_",
        "aten::mul_",
        "aten::addcmul",
        "aios_cpu::add_rms_norm",
        "aios_cpu::rope_write",
        "aios_cpu::silu_mul",
    ),
    # a pure-decode step's layers in one native call: its own attention, norms, rotary and activations, whose
    # parts the profiler does not see (the weight products it calls are counted as matmul)
    "native layer loop": ("aios_cpu::decode_layers",),
}
KIND_OF = {op: kind for kind, ops in KINDS.items() for op in ops}


class PhaseClock:
    """Wraps an engine's step phases to add up their wall time."""

    def __init__(self, engine: TorchEngine):
        self.seconds: dict[str, float] = defaultdict(float)
        model, chooser, table = engine.model, engine._chooser, engine._table
        model.forward = self._timed("forward", model.forward)
        chooser.choose = self._timed("choose", chooser.choose)
        table.emit = self._timed("emit", table.emit)

    def _timed(self, name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start

        return wrapper


def _admit(engine: TorchEngine, batch: int, steps: int, temperature: float) -> list[str]:
    rng = random.Random(batch)
    ids = [f"p{batch}-{i}" for i in range(batch)]
    for i, req_id in enumerate(ids):
        params = SamplingParams(
            max_tokens=steps + 8, ignore_eos=True, temperature=temperature, top_p=0.9, top_k=50, seed=i
        )
        engine.add(EngineRequest(req_id, engine.tokenize(words_text(rng, CONTEXT)), params))
    while len(engine.step()) < batch:  # prefill until every sequence has its first token
        pass
    engine.step()  # one decode step to warm up
    return ids


@contextmanager
def _decoding(engine: TorchEngine, batch: int, steps: int, temperature: float):
    ids = _admit(engine, batch, steps, temperature)
    try:
        yield
    finally:
        for req_id in ids:
            engine.abort(req_id)


def plain_run(engine: TorchEngine, clock: PhaseClock, batch: int, steps: int, temperature: float) -> dict[str, float]:
    """ms per step: total and by phase."""
    with _decoding(engine, batch, steps, temperature):
        clock.seconds.clear()
        start = time.perf_counter()
        for _ in range(steps):
            engine.step()
        total = time.perf_counter() - start
    phases = {name: 1000 * s / steps for name, s in clock.seconds.items()}
    phases["step"] = 1000 * total / steps
    return phases


def profiled_run(
    engine: TorchEngine, clock: PhaseClock, batch: int, steps: int, temperature: float
) -> dict[str, float]:
    """ms per step of aten self time by kind (the sampler's ops included), the forward's and choose()'s wall time
    under the profiler, and the number of ops per step."""
    with _decoding(engine, batch, steps, temperature):
        clock.seconds.clear()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                engine.step()
    kinds: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.key.startswith(("aten::", "mkldnn::", "aios_cpu::")):
            kinds[KIND_OF.get(event.key, "other ops")] += event.self_cpu_time_total / 1000 / steps
            kinds["ops"] += event.count / steps
    kinds["forward wall"] = 1000 * clock.seconds["forward"] / steps
    kinds["choose wall"] = 1000 * clock.seconds["choose"] / steps
    return kinds


def breakdown(engine: TorchEngine, clock: PhaseClock, batch: int, args) -> list[tuple[str, float]]:
    plain = [plain_run(engine, clock, batch, args.steps, args.temperature) for _ in range(args.repeats)]
    profiled = [profiled_run(engine, clock, batch, args.steps, args.temperature) for _ in range(args.repeats)]
    med = lambda runs, key: statistics.median(r.get(key, 0.0) for r in runs)
    step, forward = med(plain, "step"), med(plain, "forward")
    choose, emit = med(plain, "choose"), med(plain, "emit")
    op_kinds = ("matmul", "attention", "norms/rotary/act", "native layer loop", "other ops")
    self_ms = {kind: med(profiled, kind) for kind in op_kinds}
    # The sampler's own ops (argmax, softmax, sort, ...) ran inside choose(): they are not the forward's.
    self_ms["other ops"] = max(self_ms["other ops"] - med(profiled, "choose wall"), 0.0)
    wall = med(profiled, "forward wall")
    rows = [("step (wall)", step), ("  forward (wall)", forward)]
    rows += [(f"    {kind}", forward * self_ms[kind] / wall) for kind in op_kinds]
    rows.append(("    Python + dispatch (upper bound)", forward * max(1 - sum(self_ms.values()) / wall, 0.0)))
    rows.append(("  sampling (token choice)", choose))
    rows.append(("  emit (bookkeeping, detokenize)", emit))
    rows.append(("  schedule + batch build", max(step - forward - choose - emit, 0.0)))
    rows.append(("aten ops per step (count, nested too)", med(profiled, "ops")))
    return rows


STAGES = ("norm", "qkv", "attend", "quant", "o", "mlp norm", "gate_up", "silu", "down")  # decode_pool.cpp's order


def pool_phases(engine: TorchEngine, batch: int, args) -> None:
    """Prints where the pooled layer loop's time goes, per phase kind and thread (see the module docstring)."""
    ops = torch.ops.aios_cpu
    phases = engine.model.cfg.n_layers * len(STAGES)
    with _decoding(engine, batch, args.steps * args.repeats, args.temperature):
        ops.pool_profile(phases)  # drop the prefill's and warm-up's jobs
        start = time.perf_counter()
        for _ in range(args.steps * args.repeats):
            engine.step()
        wall = 1000 * (time.perf_counter() - start)
        tallies, lags, jobs = ops.pool_profile(phases)
    steps = int(jobs[0])
    if steps == 0:
        print(f"batch {batch}: no pooled layer-loop job ran (native pool off, or not block weights)")
        return
    threads = tallies.shape[0]
    per_kind = tallies.view(threads, -1, len(STAGES), 5).sum(1).double()  # [threads, stage, field]
    ms = per_kind[..., :3] / 1e6 / steps
    print(f"\nbatch {batch}: {steps} steps, {wall / steps:.2f} ms per step (wall, all of engine.step)")
    header = ["phase", "tasks"] + [f"t{t} {f}" for t in range(threads) for f in ("run", "wait", "sleep")]
    rows = []
    for s, stage in enumerate(STAGES):
        cells = [stage, f"{per_kind[:, s, 3].sum() / steps:.0f}"]
        cells += [f"{ms[t, s, f]:.2f}" for t in range(threads) for f in range(3)]
        rows.append(cells)
    total = ms.sum(1)
    rows.append(
        ["all", f"{per_kind[..., 3].sum() / steps:.0f}"]
        + [f"{total[t, f]:.2f}" for t in range(threads) for f in range(3)]
    )
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths]] + rows:
        print(" | ".join(cell.rjust(w) for cell, w in zip(row, widths)))
    sleeps = per_kind[..., 4].sum(1) / steps
    for t in range(threads):
        print(
            f"thread {t}: joins {lags[t, 0] / 1e6 / steps:.3f} ms after the step's start, leaves "
            f"{lags[t, 1] / 1e6 / steps:.3f} ms before its end, {sleeps[t]:.1f} futex sleeps per step; "
            f"run {total[t, 0] / (total[t, 0] + total[t, 1]):.1%} of its time in the loop"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--weights", default=None, help="weights mode (engine default when absent)")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=0.0, help="> 0: every row samples (top-k 50, top-p 0.9)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--pool-phases", action="store_true", help="the native pool's phases from the inside instead")
    args = parser.parse_args()
    if args.pool_phases:
        os.environ["AIOS_POOL_PROFILE"] = "1"  # read once, at the pool's first job
    options = {} if args.weights is None else {"weights": args.weights}
    engine = TorchEngine.from_path(
        args.model, args.dtype, kv_budget_tokens=8192, max_batch=32, prefill_chunk=512, threads=args.threads, **options
    )
    if args.pool_phases:
        print(f"threads={torch.get_num_threads()} weights={getattr(engine, 'weights', '-')} context={CONTEXT}")
        for batch in [int(b) for b in args.batches.split(",")]:
            pool_phases(engine, batch, args)
        return
    clock = PhaseClock(engine)
    batches = [int(b) for b in args.batches.split(",")]
    results = {batch: breakdown(engine, clock, batch, args) for batch in batches}
    print(
        f"threads={torch.get_num_threads()} dtype={args.dtype} weights={getattr(engine, 'weights', '-')} "
        f"context={CONTEXT} temperature={args.temperature}  (ms per decode step, medians of {args.repeats})"
    )
    labels = [label for label, _ in results[batches[0]]]
    header = ["phase"] + [f"batch {b}" for b in batches]
    rows = [[label] + [f"{dict(results[b])[label]:.2f}" for b in batches] for label in labels]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths]] + rows:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths)))


if __name__ == "__main__":
    main()
