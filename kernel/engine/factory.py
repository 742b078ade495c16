"""The one way the kernel and the benchmarks obtain an engine."""
from __future__ import annotations

from typing import Sequence

from kernel.engine.core.interface import Engine, EngineError

ENGINE_KINDS = ("torch", "exllamav2", "openai")


def load_engine(kind: str = "torch", model: str | None = None, dtype: str = "bfloat16", kv_budget_tokens: int = 16384,
                max_batch: int = 32, prefill_chunk: int = 256, threads: int | None = None, prefix_cache: bool = True,
                engine_urls: Sequence[str] = (), weights: str | None = None) -> Engine:
    """kind "torch": the CPU engine (model None → the bundled SmolLM2 GGUF; threads None → all cores);
    "exllamav2": the GPU engine (dtype and threads do not apply: its weights and cache are fp16 on the GPU).
    prefix_cache False: finished sequences' KV is not kept for reuse by later requests.
    weights (torch only): how the matrices are stored and multiplied, "auto" | "int4" | "int8" | "bf16" | "fp32";
    dtype stays the activations' and KV's; None → weights in dtype (see TorchEngine).
    "openai": OpenAI-compatible servers at engine_urls (http://HOST:PORT/v1 each), a pool of replicas; model is the
    served model's tokenizer (GGUF or folder; None: the served file if local, else the bundled SmolLM2), max_batch
    bounds each replica's calls in flight where the server does not report its slots; the rest do not apply."""
    if kind == "torch":
        from kernel.engine.cpu.torch_engine import TorchEngine
        return TorchEngine.from_path(model, dtype=dtype, kv_budget_tokens=kv_budget_tokens, max_batch=max_batch,
                                     prefill_chunk=prefill_chunk, threads=threads, prefix_cache=prefix_cache,
                                     weights=weights)
    if kind == "exllamav2":
        from kernel.engine.gpu.exllama_engine import ExLlamaV2Engine   # needs a GPU and the exllamav2 package
        return ExLlamaV2Engine.from_path(model, kv_budget_tokens=kv_budget_tokens, max_batch=max_batch,
                                         prefill_chunk=prefill_chunk, prefix_cache=prefix_cache)
    if kind == "openai":
        from kernel.engine.remote import RemoteEngine
        return RemoteEngine(engine_urls, model=model, max_batch=max_batch)
    raise EngineError(f"unknown engine kind {kind!r} (expected one of {', '.join(ENGINE_KINDS)})")
