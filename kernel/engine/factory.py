"""The one way the kernel and the benchmarks obtain an engine, and how many threads a CPU engine runs by default.

load_engine(kind, ...): kind is an EngineKind (kinds.py; a name or an older alias is parsed, so "torch" still works),
the engine is imported only then: importing this module imports neither torch nor exllamav2.

default_threads(): $AIOS_THREADS if set (a positive integer, else EngineError), otherwise the physical cores among the
CPUs this process may run on (os.sched_getaffinity, so a taskset or cgroup cpuset narrows it), each core counted once
however many SMT siblings it has (/sys/devices/system/cpu/cpuN/topology/thread_siblings_list). A decode step streams
the weights: two hyperthreads of one core share its load ports and caches and add little, while every parallel region
waits for its slowest thread, so a sibling that an agent process also wants slows the whole step. Without the sysfs
topology (not Linux, masked /sys) every allowed CPU counts. The choice and its reason are logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from kernel.engine.core.interface import Engine, EngineError
from kernel.engine.kinds import EngineKind, parse_engine_kind

THREADS_ENV = "AIOS_THREADS"
_CPU_SYSFS = Path("/sys/devices/system/cpu")

log = logging.getLogger(__name__)


def _parse_cpu_list(text: str) -> set[int]:
    """ "0-3,8,10-11" → {0, 1, 2, 3, 8, 10, 11} (the kernel's cpulist format)."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if part:
            low, _, high = part.partition("-")
            cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def physical_cores(allowed: set[int] | None = None, sysfs: Path = _CPU_SYSFS) -> tuple[int, str]:
    """How many physical cores the allowed CPUs (default: this process's affinity) span, and how that was found."""
    allowed = set(os.sched_getaffinity(0)) if allowed is None else allowed
    cores: set[frozenset[int]] = set()
    try:
        for cpu in allowed:
            siblings = _parse_cpu_list((sysfs / f"cpu{cpu}" / "topology" / "thread_siblings_list").read_text())
            cores.add(frozenset(siblings & allowed) or frozenset({cpu}))
    except (OSError, ValueError):
        return len(allowed), f"{len(allowed)} allowed CPUs (no SMT topology readable)"
    return len(cores), f"{len(cores)} physical cores among {len(allowed)} allowed CPUs"


def default_threads() -> int:
    """The CPU engine's thread count when the caller names none (see the module docstring); logged."""
    chosen = os.environ.get(THREADS_ENV)
    if chosen is not None:
        if not chosen.strip().isdigit() or int(chosen) <= 0:
            raise EngineError(f"{THREADS_ENV} must be a positive integer, got {chosen!r}")
        log.info("engine threads: %d (%s)", int(chosen), THREADS_ENV)
        return int(chosen)
    count, reason = physical_cores()
    log.info("engine threads: %d (%s)", count, reason)
    return count


def load_engine(
    kind: EngineKind | str = EngineKind.CPU,
    model: str | None = None,
    dtype: str = "bfloat16",
    kv_budget_tokens: int = 16384,
    max_batch: int = 32,
    prefill_chunk: int = 256,
    threads: int | None = None,
    prefix_cache: bool = True,
    engine_urls: Sequence[str] = (),
    weights: str | None = None,
) -> Engine:
    """kind CPU: the torch engine (model None → the bundled SmolLM2 GGUF; threads None → default_threads());
    GPU: the ExLlamaV2 engine (dtype and threads do not apply: its weights and cache are fp16 on the GPU).
    prefix_cache False: finished sequences' KV is not kept for reuse by later requests.
    weights (CPU only): how the matrices are stored and multiplied, "auto" | "int4" | "int8" | "bf16" | "fp32";
    dtype stays the activations' and KV's; None → weights in dtype (see TorchEngine).
    REMOTE: OpenAI-compatible servers at engine_urls (http://HOST:PORT/v1 each), a pool of replicas; model is the
    served model's tokenizer (GGUF or folder; None: the served file if local, else the bundled SmolLM2), max_batch
    bounds each replica's calls in flight where the server does not report its slots; the rest do not apply.
    A kind that is none of these: UnknownEngineKind (an EngineError)."""
    kind = parse_engine_kind(kind)
    if kind is EngineKind.CPU:
        from kernel.engine.cpu.engine import TorchEngine

        return TorchEngine.from_path(
            model,
            dtype=dtype,
            kv_budget_tokens=kv_budget_tokens,
            max_batch=max_batch,
            prefill_chunk=prefill_chunk,
            threads=threads,
            prefix_cache=prefix_cache,
            weights=weights,
        )
    if kind is EngineKind.GPU:
        from kernel.engine.gpu.engine import ExLlamaV2Engine  # needs a GPU and the exllamav2 package

        return ExLlamaV2Engine.from_path(
            model,
            kv_budget_tokens=kv_budget_tokens,
            max_batch=max_batch,
            prefill_chunk=prefill_chunk,
            prefix_cache=prefix_cache,
        )
    from kernel.engine.remote import RemoteEngine

    return RemoteEngine(engine_urls, model=model, max_batch=max_batch)
