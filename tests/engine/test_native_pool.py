"""The decode layer loop on the native worker pool (kernel/engine/cpu/native/decode_pool.cpp, pool.cpp) against the
same loop over the separate native ops (AIOS_NATIVE_POOL=0, which test_native_ops.py holds to the Python loop): the
same residual stream and the same K/V cache, bit for bit, for every block format, on each instruction set this CPU
has, at several thread counts (changing between calls), with decode rows through the row kernels and (more than 8)
the blocked product, with grouped-query heads that are and are not whole quantization blocks, over paged contexts of
scattered blocks; with each family's layer features (Qwen2's q/k/v bias, Qwen3's q/k norm, Gemma 3's post norms,
GeGLU, query scale, sliding windows and per-layer rotary tables); and from several Python threads at once. Every way
of cutting products into tasks (AIOS_POOL_TASKS) gives the same bits, and the pool's opt-in counters
(AIOS_POOL_PROFILE) count every task once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf.quants import quantize

from kernel.engine.cpu.block_weights import GGUF_FORMATS, RAW_BLOCKS, BlockLinear, supported_isas
from kernel.engine.cpu.native import load

library = load()
pytestmark = pytest.mark.skipif(library is None, reason="the native ops did not build on this machine")

FORMATS = [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q4_K, Q.Q6_K]
E, F, LAYERS, BLOCK, SLOTS = 256, 1280, 2, 4, 512  # F: two silu chunks, the last one partial
SCALE_AT = {Q.Q4_K: (0, 2), Q.Q6_K: (208,)}
FEATURES = ("llama", "qwen2", "qwen3", "gemma3")  # which layer extras a step's model has (layer_extras)


def block_product(qtype: Q, n: int, k: int, rng) -> tuple[int, torch.Tensor, torch.Tensor]:
    """(kind, codes, scales) of an n x k product: gguf's quantizer where it has one, else random blocks whose fp16
    scales keep the outputs small."""
    if qtype in SCALE_AT:
        per_block, block_bytes = RAW_BLOCKS[GGUF_FORMATS[qtype]]
        raw = rng.integers(0, 256, (n, k // per_block, block_bytes), dtype=np.uint8)
        for at in SCALE_AT[qtype]:
            scales = rng.uniform(-1, 1, (n, k // per_block)) * 2e-3
            raw[..., at : at + 2] = scales.astype(np.float16)[..., None].view(np.uint8)
        raw = raw.reshape(n, -1)
    else:
        raw = quantize(rng.standard_normal((n, k)).astype(np.float32) * 0.05, qtype)
    kind, codes, scales = BlockLinear.from_gguf(raw, qtype, (n, k)).native_kind()
    return int(kind), codes, scales


def layer_extras(features: str, heads: tuple[int, int, int], dtype: torch.dtype, g) -> list[torch.Tensor]:
    """One layer's extras as decode_layers takes them (qkv bias, q norm, k norm, post-attention norm, post-MLP norm;
    empty where the family has none)."""
    H, HKV, D = heads
    norm = lambda n: (torch.rand(n, generator=g) + 0.5).to(dtype)
    none = torch.empty(0, dtype=dtype)
    bias = (torch.rand((H + 2 * HKV) * D, generator=g) - 0.5).to(dtype) if features == "qwen2" else none
    qk = [norm(D), norm(D)] if features in ("qwen3", "gemma3") else [none, none]
    post = [norm(E), norm(E)] if features == "gemma3" else [none, none]
    return [bias, *qk, *post]


def make_step(qtype: Q, heads: tuple[int, int, int], rows: int, dtype: torch.dtype, seed: int, features="llama"):
    """decode_layers' arguments for `rows` single-token rows, each with its own context of scattered blocks."""
    H, HKV, D = heads
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    norms, kinds, weights, extras = [], [], [], []
    for _ in range(LAYERS):
        norms += [(torch.rand(E, generator=g) + 0.5).to(dtype) for _ in range(2)]
        for n, k in (((H + 2 * HKV) * D, E), (E, H * D), (2 * F, E), (E, F)):
            kind, codes, scales = block_product(qtype, n, k, rng)
            kinds.append(kind)
            weights += [codes, scales]
        extras += layer_extras(features, heads, dtype, g)
    lens = torch.randint(1, 40, (rows,), generator=g)
    max_blocks = int(lens.max()) // BLOCK + 1
    order = torch.randperm(SLOTS // BLOCK, generator=g)[: rows * max_blocks]
    tables = order.view(rows, max_blocks)
    positions = lens - 1
    slots = tables[torch.arange(rows), positions // BLOCK] * BLOCK + positions % BLOCK
    gemma = features == "gemma3"
    tables_per_layer = [torch.rand(64, D, generator=g) * 6.28 for _ in range(LAYERS if gemma else 1)]
    angles = [tables_per_layer[layer % len(tables_per_layer)] for layer in range(LAYERS)]
    return dict(
        x=torch.randn(rows, E, generator=g).to(dtype),
        norms=norms,
        kinds=kinds,
        weights=weights,
        extras=extras,
        cos=[a.cos().to(dtype) for a in angles],
        signed_sin=[a.sin().to(dtype) for a in angles],
        windows=[7 if gemma and layer % 2 == 0 else 0 for layer in range(LAYERS)],  # contexts of 1..39: some longer
        positions=positions,
        kv=torch.randn(LAYERS, 2, SLOTS, HKV, D, generator=g).to(dtype),
        slots=slots,
        block_tables=tables,
        context_lens=lens,
        block_size=BLOCK,
        n_heads=H,
        n_kv_heads=HKV,
        int4_group=32,
        eps=1e-5,
        scale=0.3 if gemma else D**-0.5,
        gelu=gemma,
    )


def run_step(step: dict, threads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, kv) after one call, on copies of the step's tensors, at `threads` threads."""
    args = {**step, "x": step["x"].clone(), "kv": step["kv"].clone()}
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        library.decode_layers(*args.values())
    finally:
        torch.set_num_threads(previous)
    return args["x"], args["kv"]


def reference(step: dict, monkeypatch) -> tuple[torch.Tensor, torch.Tensor]:
    with monkeypatch.context() as patch:
        patch.setenv("AIOS_NATIVE_POOL", "0")
        return run_step(step, 1)


@pytest.mark.parametrize("isa", [isa.name.lower() for isa in supported_isas() if isa.name != "SCALAR"] or ["scalar"])
@pytest.mark.parametrize("qtype", FORMATS, ids=[f.name for f in FORMATS])
@pytest.mark.parametrize("heads", [(8, 2, 32), (16, 16, 16)], ids=["gqa-fused", "unaligned-heads"])
@pytest.mark.parametrize("rows", [1, 3, 11])
def test_the_pooled_loop_is_the_op_loop(monkeypatch, isa, qtype, heads, rows):
    monkeypatch.setenv("AIOS_QGEMM_ISA", isa)
    dtype = torch.bfloat16 if rows != 3 else torch.float32
    step = make_step(qtype, heads, rows, dtype, seed=rows * 7 + len(isa))
    x_ref, kv_ref = reference(step, monkeypatch)
    assert not torch.equal(x_ref, step["x"]) and not torch.equal(kv_ref, step["kv"])  # the step did something
    assert torch.isfinite(x_ref.float()).all()
    for threads in (1, 2, 3, 2):  # the count changes between calls, as the governor changes it
        x, kv = run_step(step, threads)
        assert torch.equal(x, x_ref), f"x differs at {threads} threads"
        assert torch.equal(kv, kv_ref), f"kv differs at {threads} threads"


@pytest.mark.parametrize("features", FEATURES[1:])
@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_K], ids=["Q8_0", "Q4_K"])
@pytest.mark.parametrize("heads", [(8, 2, 32), (16, 16, 16)], ids=["gqa-fused", "unaligned-heads"])
@pytest.mark.parametrize("rows", [1, 3, 11])
def test_the_pooled_loop_is_the_op_loop_for_each_family(monkeypatch, features, qtype, heads, rows):
    """The layer extras (bias, q/k norm, post norms, GeGLU, query scale, windows, per-layer rotary) on the pool: the
    same bits as the op loop, which test_native_ops.py holds to the Python loop."""
    dtype = torch.bfloat16 if rows != 3 else torch.float32
    step = make_step(qtype, heads, rows, dtype, seed=rows * 5 + len(features), features=features)
    plain = make_step(qtype, heads, rows, dtype, seed=rows * 5 + len(features))
    x_ref, kv_ref = reference(step, monkeypatch)
    assert torch.isfinite(x_ref.float()).all()
    assert not torch.equal(x_ref, reference(plain, monkeypatch)[0])  # the extras change the step
    for threads in (1, 2, 3):
        x, kv = run_step(step, threads)
        assert torch.equal(x, x_ref), f"x differs at {threads} threads"
        assert torch.equal(kv, kv_ref), f"kv differs at {threads} threads"


def test_callers_on_several_threads_at_once_each_get_their_own_step(monkeypatch):
    """The pool runs one job at a time; a caller that finds it busy runs its step alone: same results either way.
    With no spinning every wait is a futex sleep and wake."""
    monkeypatch.setenv("AIOS_POOL_SPIN_US", "0")
    steps = [make_step(Q.Q4_0, (8, 2, 32), rows, torch.float32, seed=rows) for rows in (1, 2, 5, 9)]
    expected = [reference(step, monkeypatch) for step in steps]
    results: dict[int, list] = {}

    def caller(i: int) -> None:
        results[i] = [run_step(steps[i], 2) for _ in range(3)]

    callers = [threading.Thread(target=caller, args=(i,)) for i in range(len(steps))]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join(timeout=300)
    assert sorted(results) == list(range(len(steps)))
    for i, runs in results.items():
        for x, kv in runs:
            assert torch.equal(x, expected[i][0]) and torch.equal(kv, expected[i][1])


def test_bad_tables_are_errors_before_any_work(monkeypatch):
    step = make_step(Q.Q8_0, (8, 2, 32), 2, torch.float32, seed=3)
    bad = {**step, "context_lens": torch.tensor([1, 10_000])}
    with pytest.raises(RuntimeError, match="context length out of range"):
        run_step(bad, 2)
    bad = {**step, "slots": torch.tensor([0, SLOTS])}
    with pytest.raises(RuntimeError, match="out of range"):
        run_step(bad, 2)
    short = {**step, "weights": [step["weights"][0][:-1], *step["weights"][1:]]}
    with pytest.raises(RuntimeError):
        run_step(short, 2)
    qwen = make_step(Q.Q8_0, (8, 2, 32), 2, torch.float32, seed=3, features="qwen2")
    bad = {**qwen, "extras": [qwen["extras"][0][:-1], *qwen["extras"][1:]]}
    with pytest.raises(RuntimeError, match="wrong shape"):
        run_step(bad, 2)
    bad = {**qwen, "extras": qwen["extras"][: len(qwen["extras"]) // 2] + [torch.empty(0)] * 5}
    with pytest.raises(RuntimeError, match="same extras"):
        run_step(bad, 2)


@pytest.mark.parametrize("split", ["rows", "bytes", "guided"])
@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q5_0], ids=["Q4_0", "Q5_0"])
@pytest.mark.parametrize("rows", [1, 5])
def test_every_task_split_gives_the_op_loops_bits(monkeypatch, split, qtype, rows):
    """Tasks by rows, by bytes, or shrinking toward a phase's end: which thread computes which weight rows changes,
    no value does (the op loop's products cut their tasks the same way, so it is pinned to rows here)."""
    step = make_step(qtype, (8, 2, 32), rows, torch.bfloat16, seed=rows + 100)
    monkeypatch.setenv("AIOS_POOL_TASKS", "rows")
    x_ref, kv_ref = reference(step, monkeypatch)
    monkeypatch.setenv("AIOS_POOL_TASKS", split)
    for threads in (2, 3, 1):
        x, kv = run_step(step, threads)
        assert torch.equal(x, x_ref) and torch.equal(kv, kv_ref), f"{split} differs at {threads} threads"


PROFILE_SCRIPT = """
import sys, torch
library_file, step_file, layers, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.ops.load_library(library_file)
ops = torch.ops.aios_cpu
step = torch.load(step_file)
torch.set_num_threads(threads)
ops.pool_profile(layers * 9)  # nothing before the steps
for _ in range(2):
    ops.decode_layers(*{**step, "x": step["x"].clone(), "kv": step["kv"].clone()}.values())
tallies, lags, jobs = ops.pool_profile(layers * 9)
print(int(jobs[0]), *tallies[..., 3].sum(0).tolist())
if tallies.numel():
    print(int((tallies[..., 0] > 0).sum()), int(tallies[..., :3].min()), int(lags.min()))
else:
    print("-")
print(ops.pool_profile(layers * 9)[0].numel())
"""


def loaded_library_file() -> str:
    """The shared object this process loaded the native ops from: a child process loads the same build."""
    for line in open("/proc/self/maps"):
        path = line.split()[-1]
        if os.path.basename(path).startswith("aios_cpu_ops") and path.endswith(".so"):
            return path
    raise AssertionError("the native library is not mapped")


@pytest.mark.parametrize("profiled", [True, False])
def test_the_pools_counters_count_each_task_once(tmp_path, profiled):
    """In a process with AIOS_POOL_PROFILE=1, two steps of a 2-layer loop: two jobs, every phase's tasks counted once
    per job however the threads shared them, times never negative, a take resets; without it, nothing is counted."""
    rows, threads, heads_kv = 3, 2, 2
    step = make_step(Q.Q4_0, (8, heads_kv, 32), rows, torch.float32, seed=5)
    torch.save(step, tmp_path / "step.pt")
    env = {**os.environ, "AIOS_POOL_PROFILE": "1" if profiled else "0", "AIOS_NATIVE_POOL": "1"}
    command = [sys.executable, "-c", PROFILE_SCRIPT, loaded_library_file(), str(tmp_path / "step.pt")]
    out = subprocess.run([*command, str(LAYERS), str(threads)], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    first, second, third = out.stdout.strip().splitlines()[-3:]
    if not profiled:
        assert first.split() == ["0"] and second == "-" and third == "0"
        return
    jobs, *tasks = (int(v) for v in first.split())
    assert jobs == 2
    assert len(tasks) == LAYERS * 9
    silu_tasks = rows * -(-F // 1024)
    for layer in range(LAYERS):
        norm, qkv, attend, quant, o, mlp_norm, gate_up, silu, down = tasks[9 * layer : 9 * layer + 9]
        assert (norm, attend, quant, mlp_norm, silu) == (2 * rows, 2 * rows * heads_kv, 0, 2 * rows, 2 * silu_tasks)
        assert min(qkv, o, gate_up, down) >= 2 and all(t % 2 == 0 for t in (qkv, o, gate_up, down))
    ran, smallest_time, smallest_lag = (int(v) for v in second.split())
    assert ran > 0 and smallest_time >= 0 and smallest_lag >= 0
    assert third == "0"  # taken: the counters start again from nothing
