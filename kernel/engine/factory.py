"""The one way the kernel and the benchmarks obtain an engine."""
from __future__ import annotations

from kernel.engine.interface import Engine, EngineError

ENGINE_KINDS = ("torch", "exllamav2")


def load_engine(kind: str = "torch", model: str | None = None, dtype: str = "bfloat16", kv_budget_tokens: int = 16384,
                max_batch: int = 32, prefill_chunk: int = 256, threads: int | None = None) -> Engine:
    """kind "torch": the CPU engine (model None → the bundled SmolLM2 GGUF; threads None → all cores);
    "exllamav2": the GPU engine."""
    if kind == "torch":
        from kernel.engine.torch_engine import TorchEngine
        return TorchEngine.from_path(model, dtype=dtype, kv_budget_tokens=kv_budget_tokens, max_batch=max_batch,
                                     prefill_chunk=prefill_chunk, threads=threads)
    if kind == "exllamav2":
        from kernel.engine.exllama_engine import ExLlamaV2Engine   # needs a GPU and the exllamav2 package
        return ExLlamaV2Engine.from_path(model, kv_budget_tokens=kv_budget_tokens, max_batch=max_batch)
    raise EngineError(f"unknown engine kind {kind!r} (expected one of {', '.join(ENGINE_KINDS)})")
