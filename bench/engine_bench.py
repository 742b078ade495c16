"""Torch engine speed next to HF transformers generate() and the memory-bandwidth floor, on the same weights.

    python -m bench.engine_bench [--model PATH] [--dtypes bfloat16,float32] [--repeats 3] [--new-tokens 48] [--threads N]

Decode tokens/s at batch 1 and 8, prefill tokens/s, KV bytes/token and KV snapshot copy speed; every number is the
median of --repeats runs, and every ratio is against a baseline measured in this same run. --threads sets the thread
count of everything measured (ours, HF, the bandwidth copy); on cores shared with other busy processes one thread can
beat two.
"""
from __future__ import annotations

import kernel.engine  # noqa: F401  (sets the OpenMP wait policy before torch loads)

import argparse
import statistics
import time

import torch

from kernel.engine.loading.checkpoint import default_model_path, load_checkpoint
from kernel.engine.core.interface import EngineRequest, SamplingParams
from kernel.engine.cpu.torch_engine import DTYPES, TorchEngine

PREFILL_TOKENS = 512
BATCH = 8


def memory_bandwidth(nbytes: int = 1 << 30, repeats: int = 5) -> float:
    """Bytes/s moved by a large tensor copy (read + write), best of several."""
    src, dst = torch.ones(nbytes // 4), torch.empty(nbytes // 4)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * nbytes / best


def _prompts(engine: TorchEngine, n: int, length: int) -> list[list[int]]:
    text = " ".join(f"Agent {i} asks the kernel to schedule tool calls, memory and files." for i in range(400))
    ids = engine.tokenize(text)
    return [ids[i * 7:i * 7 + length] for i in range(n)]


def ours_decode(engine: TorchEngine, prompts: list[list[int]], new_tokens: int) -> float:
    """Decode tokens/s over all sequences, timed from the first sampled token (prefill excluded)."""
    for i, prompt in enumerate(prompts):
        engine.add(EngineRequest(f"d{i}", prompt, SamplingParams(max_tokens=new_tokens, ignore_eos=True)))
    started: set[str] = set()
    while len(started) < len(prompts):
        started.update(event.req_id for event in engine.step())
    start, produced = time.perf_counter(), 0
    while engine.has_work():
        produced += len(engine.step())
    return produced / (time.perf_counter() - start)


def ours_prefill(engine: TorchEngine, prompt: list[int]) -> float:
    engine.add(EngineRequest("p", prompt, SamplingParams(max_tokens=1)))
    start = time.perf_counter()
    while engine.has_work():
        engine.step()
    return len(prompt) / (time.perf_counter() - start)


def hf_decode(model, prompts: list[list[int]], new_tokens: int) -> float:
    """(new_tokens - 1) extra tokens per sequence over the time generate(new_tokens) takes beyond generate(1)."""
    ids = torch.tensor(prompts)
    mask = torch.ones_like(ids)

    def timed(n: int) -> float:
        start = time.perf_counter()
        model.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return time.perf_counter() - start
    return len(prompts) * (new_tokens - 1) / (timed(new_tokens) - timed(1))


def hf_prefill(model, prompt: list[int]) -> float:
    ids = torch.tensor([prompt])
    start = time.perf_counter()
    model(ids)
    return len(prompt) / (time.perf_counter() - start)


def kv_copy_speed(engine: TorchEngine, prompt: list[int]) -> tuple[float, float]:
    """save_kv and load_kv bytes/s for one long sequence."""
    engine.add(EngineRequest("kv", prompt, SamplingParams(max_tokens=2)))
    while not engine.step():   # until the prompt is prefilled
        pass
    buffer = memoryview(bytearray(engine.kv_nbytes("kv")))
    start = time.perf_counter()
    meta = engine.save_kv("kv", buffer)
    saved = time.perf_counter() - start
    engine.abort("kv")
    start = time.perf_counter()
    resumed = EngineRequest("kv", prompt, SamplingParams(max_tokens=2), list(meta.token_ids[len(prompt):]))
    engine.load_kv(resumed, meta, buffer)
    loaded = time.perf_counter() - start
    engine.abort("kv")
    return meta.nbytes / saved, meta.nbytes / loaded


def median(fn, repeats: int) -> float:
    return statistics.median(fn() for _ in range(repeats))


def bench_dtype(dtype: str, args, bandwidth: float) -> list[tuple[str, str, str, str, str]]:
    from transformers import AutoModelForCausalLM   # the baseline only
    path = default_model_path() if args.model is None else args.model
    checkpoint = load_checkpoint(path, DTYPES[dtype])
    engine = TorchEngine(checkpoint, dtype, kv_budget_tokens=16384, max_batch=32, prefill_chunk=PREFILL_TOKENS,
                         threads=args.threads)
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=DTYPES[dtype]).eval()
    one, eight = _prompts(engine, 1, 32), _prompts(engine, BATCH, 32)
    long_prompt = _prompts(engine, 1, PREFILL_TOKENS)[0]
    floor = bandwidth / engine.model.weight_nbytes()
    rows = []
    with torch.inference_mode():
        ours_prefill(engine, long_prompt)   # warm-up: first calls pay one-off allocation and kernel selection
        for label, prompts in (("decode tok/s, batch 1", one), (f"decode tok/s, batch {BATCH}", eight)):
            ours = median(lambda: ours_decode(engine, prompts, args.new_tokens), args.repeats)
            ref = median(lambda: hf_decode(hf, prompts, args.new_tokens), args.repeats)
            rows.append((f"{label} [{dtype}]", f"{ours:.1f}", f"{ref:.1f}", f"{ours / ref:.2f}x",
                         f"{floor:.1f} ({ours / floor:.2f}x)" if prompts is one else "–"))
        ours = median(lambda: ours_prefill(engine, long_prompt), args.repeats)
        ref = median(lambda: hf_prefill(hf, long_prompt), args.repeats)
        rows.append((f"prefill tok/s, {PREFILL_TOKENS} tokens [{dtype}]", f"{ours:.0f}", f"{ref:.0f}",
                     f"{ours / ref:.2f}x", "–"))
        kv = engine.layout().bytes_per_token()
        rows.append((f"KV bytes/token [{dtype}]", str(kv), str(kv), "1.00x", "–"))
        copies = [kv_copy_speed(engine, long_prompt * 8) for _ in range(args.repeats)]
        save, load = (statistics.median(c[i] for c in copies) for i in (0, 1))
        rows.append((f"save_kv / load_kv GB/s, 4096 tokens [{dtype}]", f"{save / 1e9:.1f} / {load / 1e9:.1f}",
                     "–", "–", f"copy {bandwidth / 1e9:.1f}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="GGUF file (default: bundled SmolLM2-135M-Instruct)")
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=None, help="default: all cores")
    args = parser.parse_args()
    if args.threads is not None:
        if args.threads <= 0:
            parser.error("--threads must be positive")
        torch.set_num_threads(args.threads)
    bandwidth = memory_bandwidth()
    rows = [row for dtype in args.dtypes.split(",") for row in bench_dtype(dtype, args, bandwidth)]
    header = ("metric", "ours", "HF generate", "ours/HF", "floor (ours/floor)")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    print(f"threads={torch.get_num_threads()}  memory bandwidth={bandwidth / 1e9:.1f} GB/s (copy, read+write)")
    for row in [header, tuple("-" * w for w in widths)] + rows:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths)))


if __name__ == "__main__":
    main()
