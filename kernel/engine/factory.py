"""The one way the kernel and the benchmarks obtain an engine."""
from __future__ import annotations

from kernel.engine.core.interface import Engine, EngineError

ENGINE_KINDS = ("torch", "exllamav2")


def load_engine(kind: str = "torch", model: str | None = None, dtype: str = "bfloat16", kv_budget_tokens: int = 16384,
                max_batch: int = 32, prefill_chunk: int = 256, threads: int | None = None, prefix_cache: bool = True
                ) -> Engine:
    """kind "torch": the CPU engine (model None → the bundled SmolLM2 GGUF; threads None → all cores);
    "exllamav2": the GPU engine (dtype and threads do not apply: its weights and cache are fp16 on the GPU).
    prefix_cache False: finished sequences' KV is not kept for reuse by later requests."""
    if kind == "torch":
        from kernel.engine.cpu.torch_engine import TorchEngine
        return TorchEngine.from_path(model, dtype=dtype, kv_budget_tokens=kv_budget_tokens, max_batch=max_batch,
                                     prefill_chunk=prefill_chunk, threads=threads, prefix_cache=prefix_cache)
    if kind == "exllamav2":
        from kernel.engine.gpu.exllama_engine import ExLlamaV2Engine   # needs a GPU and the exllamav2 package
        return ExLlamaV2Engine.from_path(model, kv_budget_tokens=kv_budget_tokens, max_batch=max_batch,
                                         prefill_chunk=prefill_chunk, prefix_cache=prefix_cache)
    raise EngineError(f"unknown engine kind {kind!r} (expected one of {', '.join(ENGINE_KINDS)})")
