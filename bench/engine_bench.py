"""Torch engine speed next to a peer on the same weights: HF transformers generate(), or llama.cpp's server.

    python -m bench.engine_bench [--model PATH] [--dtypes bfloat16,float32] [--weights auto,int4,int8,bf16,fp32]
                                 [--peer hf|llamacpp] [--repeats 3] [--new-tokens 48] [--threads N] [--no-kv-copy]

Decode tokens/s at batch 1 and 8, prefill tokens/s, KV bytes/token and KV snapshot copy speed, for every dtype x
weights mode (--weights: TorchEngine's weights modes; absent, the dtype's own float); every number is the median of
--repeats runs, and every ratio is against the peer measured in this same run, each of its measurements right after
ours. --peer llamacpp runs llama.cpp's HTTP server (bench/llama_server.py: xllamacpp in a child process, as a user
would run llama-server, with OpenMP's default wait policy, not ours) on the same GGUF with the same thread count and 8
slots; its speeds are its own timings (server side, so HTTP is not counted against it): decode = predicted tokens /
predicted time, 8 streams = the 8 concurrent requests' predicted tokens / the longest predicted time, prefill = prompt
tokens / prompt time with the prompt cache off.

Batch-1 decode is also given as a fraction of the machine's read bandwidth (bench/bandwidth.py: the better of the
median 1 GiB tensor sums at 1 thread and at --threads): bytes read per token / time per token, where ours reads the
model's weight_nbytes() and llama.cpp the GGUF's tensor bytes (token_embd once, as the tied output). Resident memory:
our process's RSS growth over its pre-load baseline after the runs (weights + KV cache + scratch; the KV cache's own
bytes are given) and the llama.cpp server's RSS, beside the file's size. The first line names the CPU and its SIMD
flags, the threads and the bandwidth. --threads defaults to the engine's own default (the physical cores usable,
kernel/engine/factory.py); on cores shared with other busy processes one thread can beat two.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from kernel.engine.process_env import configure_process_env

# This script runs an engine in its own process: the settings its runtimes read when torch loads, set first (aiosd's
# main does the same), so ours is measured as aiosd runs it.
configure_process_env()

import gguf  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402

from bench.bandwidth import cpu_line, read_bandwidth  # noqa: E402
from bench.llama_server import LlamaServer  # noqa: E402
from kernel.engine.core.interface import EngineRequest, SamplingParams  # noqa: E402
from kernel.engine.cpu.engine import DTYPES, TorchEngine  # noqa: E402
from kernel.engine.factory import default_threads  # noqa: E402
from kernel.engine.loading.checkpoint import default_model_path  # noqa: E402

PREFILL_TOKENS = 512
BATCH = 8
KV_BUDGET = 8192  # tokens: the 4096-token KV copy, 8 decodes and a prefill; KV bytes grow with it, so not more


def gguf_read_bytes(path: Path) -> int:
    """Bytes llama.cpp reads per decode step of this GGUF: every tensor, but the embedding table only when it is also
    the output (tied; a separate output.weight makes token_embd a lookup of a few rows)."""
    tensors = {t.name: int(t.n_bytes) for t in gguf.GGUFReader(path).tensors}
    if "output.weight" in tensors:
        tensors.pop("token_embd.weight", None)
    return sum(tensors.values())


def rss_bytes(pid: int | None = None) -> int:
    return psutil.Process(pid).memory_info().rss


def _prompts(engine: TorchEngine, n: int, length: int) -> list[list[int]]:
    text = " ".join(f"Agent {i} asks the kernel to schedule tool calls, memory and files." for i in range(400))
    ids = engine.tokenize(text)
    return [ids[i * 7 : i * 7 + length] for i in range(n)]


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
    while not engine.step():  # until the prompt is prefilled
        pass
    buffer = memoryview(bytearray(engine.kv_nbytes("kv")))
    start = time.perf_counter()
    meta = engine.save_kv("kv", buffer)
    saved = time.perf_counter() - start
    engine.abort("kv")
    start = time.perf_counter()
    resumed = EngineRequest("kv", prompt, SamplingParams(max_tokens=2), list(meta.token_ids[len(prompt) :]))
    engine.load_kv(resumed, meta, buffer)
    loaded = time.perf_counter() - start
    engine.abort("kv")
    return meta.nbytes / saved, meta.nbytes / loaded


def median(fn, repeats: int) -> float:
    return statistics.median(fn() for _ in range(repeats))


class HFPeer:
    name = "HF generate"

    def __init__(self, path: Path, dtype: str):
        from transformers import AutoModelForCausalLM  # the baseline only

        self._model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=DTYPES[dtype]).eval()

    def decode(self, prompts: list[list[int]], new_tokens: int) -> float:
        return hf_decode(self._model, prompts, new_tokens)

    def prefill(self, prompt: list[int]) -> float:
        return hf_prefill(self._model, prompt)


class LlamaCppPeer:
    """llama.cpp's server on the same GGUF, driven through its native /completion endpoint with token-id prompts."""

    name = "llama.cpp"

    def __init__(self, server: LlamaServer, model: Path | None = None):
        self._url = server.url.removesuffix("/v1") + "/completion"
        self._pid = server.pid
        self.read_bytes = gguf_read_bytes(model or default_model_path())

    def rss(self) -> int:
        """The server process's resident memory (its mapped file's touched pages included)."""
        return rss_bytes(self._pid)

    def complete(self, prompt: list[int], n_predict: int) -> dict:
        """One greedy completion of n_predict tokens (end of text ignored), uncached; its server-side timings."""
        body = json.dumps(
            {"prompt": prompt, "n_predict": n_predict, "temperature": 0, "ignore_eos": True, "cache_prompt": False}
        ).encode()
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
    baseline = rss_bytes()
    engine = TorchEngine.from_path(
        args.model,
        dtype,
        kv_budget_tokens=KV_BUDGET,
        max_batch=32,
        prefill_chunk=PREFILL_TOKENS,
        threads=args.threads,
        **options,
    )
    tag = f"[{dtype}, weights {getattr(engine, 'weights', weights or dtype)}]"
    one, eight = _prompts(engine, 1, 32), _prompts(engine, BATCH, 32)
    # A fresh prompt for every prefill (ours and the peer's): a repeated one would be served from our prefix cache.
    long_prompts = iter(_prompts(engine, 2 * args.repeats + 2, PREFILL_TOKENS))
    ours_bytes, peer_bytes = engine.model.weight_nbytes(), getattr(peer, "read_bytes", None)
    rows = []
    for c in getattr(engine, "weight_choice", []):  # what auto measured at load, and so why it chose
        rows.append(
            (
                f"weights auto candidate {c.mode} [{dtype}]",
                "–" if c.tok_s is None else f"{c.tok_s:.1f}",
                "–",
                "–",
                f"perplexity {c.ppl_ratio:.4f}x the reference's" + (" (chosen)" if c.mode == engine.weights else ""),
            )
        )
    with torch.inference_mode():
        ours_prefill(engine, next(long_prompts))  # warm-up: first calls pay one-off allocation and kernel selection
        peer.prefill(next(long_prompts))
        for label, prompts in (("decode tok/s, batch 1", one), (f"decode tok/s, batch {BATCH}", eight)):
            pairs = [
                (ours_decode(engine, prompts, args.new_tokens), peer.decode(prompts, args.new_tokens))
                for _ in range(args.repeats)
            ]
            ours, ref = (statistics.median(p[i] for p in pairs) for i in (0, 1))
            ratio = statistics.median(a / b for a, b in pairs)
            note = "–"
            if prompts is one:
                note = f"ours {ours * ours_bytes / bandwidth:.0%} of read bw ({ours_bytes / 1e6:.0f} MB/token)"
                if peer_bytes:
                    note += f", peer {ref * peer_bytes / bandwidth:.0%} ({peer_bytes / 1e6:.0f} MB/token)"
            rows.append((f"{label} {tag}", f"{ours:.1f}", f"{ref:.1f}", f"{ratio:.2f}x", note))
        pairs = [
            (ours_prefill(engine, next(long_prompts)), peer.prefill(next(long_prompts))) for _ in range(args.repeats)
        ]
        ours, ref = (statistics.median(p[i] for p in pairs) for i in (0, 1))
        rows.append(
            (
                f"prefill tok/s, {PREFILL_TOKENS} tokens {tag}",
                f"{ours:.0f}",
                f"{ref:.0f}",
                f"{statistics.median(a / b for a, b in pairs):.2f}x",
                "–",
            )
        )
        kv = engine.layout().bytes_per_token()
        rows.append((f"KV bytes/token {tag}", str(kv), "–", "–", "–"))
        if not args.no_kv_copy:  # a 4096-token prefill per repeat: minutes on a 1-3B model
            kv_prompt = _prompts(engine, 1, PREFILL_TOKENS)[0] * 8
            copies = [kv_copy_speed(engine, kv_prompt) for _ in range(args.repeats)]
            save, load = (statistics.median(c[i] for c in copies) for i in (0, 1))
            rows.append(
                (
                    f"save_kv / load_kv GB/s, 4096 tokens {tag}",
                    f"{save / 1e9:.1f} / {load / 1e9:.1f}",
                    "–",
                    "–",
                    f"read bw {bandwidth / 1e9:.1f}",
                )
            )
    file_bytes = Path(args.model).stat().st_size
    grown = rss_bytes() - baseline
    peer_rss = peer.rss() if hasattr(peer, "rss") else None
    kv_bytes = engine.kv.bytes_per_token * KV_BUDGET
    rows.append(
        (
            f"resident memory GB (file {file_bytes / 1e9:.2f}) {tag}",
            f"{grown / 1e9:.2f}",
            "–" if peer_rss is None else f"{peer_rss / 1e9:.2f}",
            "–" if peer_rss is None else f"{grown / peer_rss:.2f}x",
            f"ours {grown / file_bytes:.2f}x file; our KV cache {kv_bytes / 1e9:.2f} GB, "
            f"{(grown - kv_bytes) / file_bytes:.2f}x file without it",
        )
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="GGUF file (default: bundled SmolLM2-135M-Instruct)")
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--weights", default=None, help="comma-separated weights modes (default: the dtype's own)")
    parser.add_argument("--peer", choices=("hf", "llamacpp"), default="hf")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=None, help="default: the engine's (physical cores usable)")
    parser.add_argument("--no-kv-copy", action="store_true", help="skip the KV snapshot copy speed (large models)")
    args = parser.parse_args()
    if args.threads is not None and args.threads <= 0:
        parser.error("--threads must be positive")
    threads = args.threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    path = default_model_path() if args.model is None else Path(args.model)
    args.model = str(path)
    bandwidths = {n: read_bandwidth(n) for n in sorted({1, threads})}
    bandwidth = max(bandwidths.values())
    configs = [
        (dtype, weights)
        for dtype in args.dtypes.split(",")
        for weights in (args.weights.split(",") if args.weights else [None])
    ]
    print(cpu_line())
    print(
        f"threads={threads}  read bandwidth "
        + ", ".join(f"{n} thread(s) {b / 1e9:.1f} GB/s" for n, b in bandwidths.items())
        + f" (median 1 GiB sums; using {bandwidth / 1e9:.1f})  model={path.name} "
        f"({path.stat().st_size / 1e9:.2f} GB)",
        flush=True,
    )
    name = LlamaCppPeer.name if args.peer == "llamacpp" else HFPeer.name
    with ExitStack() as stack:
        if args.peer == "llamacpp":
            log = Path(tempfile.gettempdir()) / "engine_bench_llama_server.log"
            server = stack.enter_context(
                LlamaServer(log, slots=BATCH, threads=threads, ctx_per_slot=1024, model=str(path))
            )
            peer = LlamaCppPeer(server, path)
        for dtype, weights in configs:  # each config's table as soon as it is measured (large models: minutes)
            rows = bench_config(
                dtype, weights, peer if args.peer == "llamacpp" else HFPeer(path, dtype), args, bandwidth
            )
            print_table(("metric", "ours", name, f"ours/{name}", "notes"), rows)
            print("load average " + " ".join(f"{x:.1f}" for x in psutil.getloadavg()), flush=True)


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths)] + rows:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths)))


if __name__ == "__main__":
    main()
