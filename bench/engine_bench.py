"""Torch engine speed next to a peer on the same weights: HF transformers generate(), or llama.cpp's server.

    python -m bench.engine_bench [--model PATH] [--dtypes bfloat16,float32] [--weights int4,int8,bf16,fp32]
                                 [--peer hf|llamacpp] [--repeats 3] [--new-tokens 48] [--threads N]

Decode tokens/s at batch 1 and 8, prefill tokens/s, KV bytes/token and KV snapshot copy speed, for every dtype x
weights mode (--weights: TorchEngine's weights modes; absent, the dtype's own float); every number is the median of
--repeats runs, and every ratio is against the peer measured in this same run, each of its measurements right after
ours. --peer llamacpp runs llama.cpp's HTTP server (bench/llama_server.py: xllamacpp in a child process, as a user
would run llama-server) on the same GGUF with the same thread count and 8 slots; its speeds are its own timings
(server side, so HTTP is not counted against it): decode = predicted tokens / predicted time, 8 streams = the 8
concurrent requests' predicted tokens / the longest predicted time, prefill = prompt tokens / prompt time with the
prompt cache off. --threads sets the thread count of everything measured (ours, the peer, the bandwidth copy); on
cores shared with other busy processes one thread can beat two.
"""
from __future__ import annotations

import kernel.engine  # noqa: F401  (sets the OpenMP wait policy before torch loads)

import argparse
import json
import statistics
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from bench.llama_server import LlamaServer
from kernel.engine.loading.checkpoint import default_model_path
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


class HFPeer:
    name = "HF generate"

    def __init__(self, path: Path, dtype: str):
        from transformers import AutoModelForCausalLM   # the baseline only
        self._model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                           dtype=DTYPES[dtype]).eval()

    def decode(self, prompts: list[list[int]], new_tokens: int) -> float:
        return hf_decode(self._model, prompts, new_tokens)

    def prefill(self, prompt: list[int]) -> float:
        return hf_prefill(self._model, prompt)


class LlamaCppPeer:
    """llama.cpp's server on the same GGUF, driven through its native /completion endpoint with token-id prompts."""
    name = "llama.cpp"

    def __init__(self, server: LlamaServer):
        self._url = server.url.removesuffix("/v1") + "/completion"

    def complete(self, prompt: list[int], n_predict: int) -> dict:
        """One greedy completion of n_predict tokens (end of text ignored), uncached; its server-side timings."""
        body = json.dumps({"prompt": prompt, "n_predict": n_predict, "temperature": 0, "ignore_eos": True,
                           "cache_prompt": False}).encode()
        request = urllib.request.Request(self._url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.load(response)["timings"]

    def decode(self, prompts: list[list[int]], new_tokens: int) -> float:
        with ThreadPoolExecutor(len(prompts)) as pool:
            timings = list(pool.map(lambda p: self.complete(p, new_tokens), prompts))
        return sum(t["predicted_n"] for t in timings) / (max(t["predicted_ms"] for t in timings) / 1000)

    def prefill(self, prompt: list[int]) -> float:
        timings = self.complete(prompt, 1)
        return timings["prompt_n"] / (timings["prompt_ms"] / 1000)


def bench_config(dtype: str, weights: str | None, peer, args, bandwidth: float) -> list[tuple[str, ...]]:
    options = {} if weights is None else {"weights": weights}
    engine = TorchEngine.from_path(args.model, dtype, kv_budget_tokens=16384, max_batch=32,
                                   prefill_chunk=PREFILL_TOKENS, threads=args.threads, **options)
    tag = f"[{dtype}, weights {getattr(engine, 'weights', weights or dtype)}]"
    one, eight = _prompts(engine, 1, 32), _prompts(engine, BATCH, 32)
    # A fresh prompt for every prefill (ours and the peer's): a repeated one would be served from our prefix cache.
    long_prompts = iter(_prompts(engine, 2 * args.repeats + 2, PREFILL_TOKENS))
    floor = bandwidth / engine.model.weight_nbytes()
    rows = []
    with torch.inference_mode():
        ours_prefill(engine, next(long_prompts))   # warm-up: first calls pay one-off allocation and kernel selection
        peer.prefill(next(long_prompts))
        for label, prompts in (("decode tok/s, batch 1", one), (f"decode tok/s, batch {BATCH}", eight)):
            pairs = [(ours_decode(engine, prompts, args.new_tokens), peer.decode(prompts, args.new_tokens))
                     for _ in range(args.repeats)]
            ours, ref = (statistics.median(p[i] for p in pairs) for i in (0, 1))
            ratio = statistics.median(a / b for a, b in pairs)
            rows.append((f"{label} {tag}", f"{ours:.1f}", f"{ref:.1f}", f"{ratio:.2f}x",
                         f"{floor:.1f} ({ours / floor:.2f}x)" if prompts is one else "–"))
        pairs = [(ours_prefill(engine, next(long_prompts)), peer.prefill(next(long_prompts)))
                 for _ in range(args.repeats)]
        ours, ref = (statistics.median(p[i] for p in pairs) for i in (0, 1))
        rows.append((f"prefill tok/s, {PREFILL_TOKENS} tokens {tag}", f"{ours:.0f}", f"{ref:.0f}",
                     f"{statistics.median(a / b for a, b in pairs):.2f}x", "–"))
        kv = engine.layout().bytes_per_token()
        rows.append((f"KV bytes/token {tag}", str(kv), "–", "–", "–"))
        kv_prompt = _prompts(engine, 1, PREFILL_TOKENS)[0] * 8
        copies = [kv_copy_speed(engine, kv_prompt) for _ in range(args.repeats)]
        save, load = (statistics.median(c[i] for c in copies) for i in (0, 1))
        rows.append((f"save_kv / load_kv GB/s, 4096 tokens {tag}", f"{save / 1e9:.1f} / {load / 1e9:.1f}",
                     "–", "–", f"copy {bandwidth / 1e9:.1f}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="GGUF file (default: bundled SmolLM2-135M-Instruct)")
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--weights", default=None, help="comma-separated weights modes (default: the dtype's own)")
    parser.add_argument("--peer", choices=("hf", "llamacpp"), default="hf")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=None, help="default: all cores")
    args = parser.parse_args()
    if args.threads is not None:
        if args.threads <= 0:
            parser.error("--threads must be positive")
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    path = default_model_path() if args.model is None else Path(args.model)
    bandwidth = memory_bandwidth()
    configs = [(dtype, weights) for dtype in args.dtypes.split(",")
               for weights in (args.weights.split(",") if args.weights else [None])]
    rows = []
    if args.peer == "llamacpp":
        log = Path(tempfile.gettempdir()) / "engine_bench_llama_server.log"
        with LlamaServer(log, slots=BATCH, threads=threads, ctx_per_slot=1024, model=str(path)) as server:
            peer = LlamaCppPeer(server)
            rows = [row for dtype, weights in configs for row in bench_config(dtype, weights, peer, args, bandwidth)]
    else:
        for dtype, weights in configs:
            rows += bench_config(dtype, weights, HFPeer(path, dtype), args, bandwidth)
    name = LlamaCppPeer.name if args.peer == "llamacpp" else HFPeer.name
    header = ("metric", "ours", name, f"ours/{name}", "floor (ours/floor)")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    print(f"threads={threads}  memory bandwidth={bandwidth / 1e9:.1f} GB/s (copy, read+write)  model={path.name}")
    for row in [header, tuple("-" * w for w in widths)] + rows:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths)))


if __name__ == "__main__":
    main()
