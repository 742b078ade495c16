"""Perplexity of a model on a text, and the weights mode `auto` resolves to: measured at load, never assumed.

What auto builds is memory_plan.auto_plan's (see memory_plan.py): the candidates of AUTO_ORDER (int4, int8, bf16)
whose weights fit the engine's memory target (AUTO_MEMORY_RATIO, 1.3x the file's weights; the others are not built,
and the log says why), and the reference they are compared with, which is the file's own weights:
  - a quantized GGUF: the stored mode (its products are the file's blocks, no requantization), itself a candidate of
    perplexity ratio 1 by construction. When it is the only candidate (a Q4_0/Q4_1 file: int8 and bf16 would take
    1.7-3.6x the file), nothing is built or measured here: auto is that mode, and the engine builds it once. No fp32
    copy of the model is ever made (4 bytes per weight: 7 GB for a 1.7B, 28 GB for a 7B, beside a 1 GB file).
  - float weights (or no native block kernels): fp32, built once for its perplexity and freed; the fallback when no
    candidate holds.
Each other candidate's perplexity on CALIBRATION_TEXT is divided by the reference's on the same tokens; each within
MAX_PPL_RATIO is timed over SPEED_STEPS batch-1 decode steps (median step, after warm-up steps), and the fastest is
chosen (pick(); a tie goes to the earlier candidate, the fewer bytes). Which mode is fastest is not a constant: it
depends on the CPU's instructions, the model's size and the kernels of this build (measured: batch 1 on an AVX2
laptop-class CPU, 1.7B: int8 8.8 vs int4 6.7 tok/s; 135M: bf16 75.5 vs int4 69.9), so it is measured, and the choice
is logged with its table (candidate / perplexity ratio / tok/s).

A short text gives a noisy absolute perplexity, but both sides read the same tokens, so the ratio compares the weights
alone; bench/quality_bench.py measures the ratio on a longer text. One model is built at a time: the fastest passing
one so far is kept beside the next only while both fit the plan's weights (AutoPlan.limit, its largest single model),
else it is dropped and the engine rebuilds it if it wins — so auto never holds more than memory_plan planned.

The measurement costs a few seconds for SmolLM2 and more for large models, so its result is cached (WeightsCache) in
the user's cache directory ($AIOS_CACHE_DIR, else $XDG_CACHE_HOME/aios, else ~/.cache/aios), one JSON file per key:
the CPU (model name and flags), the model's id (file name + content digest), the compute dtype, the thread count, the
torch version, a digest of this engine's CPU code (kernels that change make their old speeds stale), AIOS_QGEMM
(which kernels multiply, so which reference) and the rule (AUTO_ORDER, MAX_PPL_RATIO, AUTO_MEMORY_RATIO, RULE). A
cache that cannot be read or written is ignored: auto then measures, as without one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from kernel.engine.cpu.kv_cache import KVCache
from kernel.engine.cpu.memory_plan import AUTO_MEMORY_RATIO, AUTO_ORDER, FALLBACK, auto_plan
from kernel.engine.cpu.model import LlamaModel
from kernel.engine.cpu.step_batch import ScheduledChunk, build_step_batch
from kernel.engine.loading.model_config import LlamaConfig

MAX_PPL_RATIO = 1.03  # quality target: perplexity within +3% of the reference's (the file's own weights)
RULE = "reference=stored-blocks,one-model-at-a-time"  # what the cached results were measured under
SPEED_STEPS = 8  # timed batch-1 decode steps per candidate (median step)
WARMUP_STEPS = 2  # first calls pay one-off allocation and kernel selection
_BLOCK = 16
_CPU_CODE = Path(__file__).resolve().parent

log = logging.getLogger(__name__)

# Project prose, written for this check: plain English of the kind the agents exchange, about 300 tokens.
CALIBRATION_TEXT = (
    "The kernel starts before any agent does. It loads one language model, opens a socket, and waits. When an agent "
    "connects, it says who it is and what it may do; the kernel writes that down and answers with the name of the "
    "model it serves. From then on the agent asks for work in small, typed messages: generate some text, continue a "
    "chat, list the other processes, store a note for later. Each request waits in a queue until the scheduler picks "
    "it. The scheduler does not know what the words mean. It sees lengths, ages and priorities, and it decides which "
    "sequences share the next step of the engine. A long prompt is cut into pieces so that it never stalls the agents "
    "that are already answering. When memory runs short, the kernel copies a sequence's cache into shared memory and "
    "brings it back later, so the agent resumes where it stopped without reading its prompt again. Nothing here is "
    "magic. Every token costs a pass over the weights, and the weights are most of the bytes the processor reads. "
    "That is why the numbers are small on purpose: a small model, a small cache, and a careful count of what each "
    "step reads. If a change makes the answers worse, the tests should notice before a person does, and if it makes "
    "them faster, the benchmark should say by how much and on which machine."
)


@dataclass(frozen=True)
class Candidate:
    mode: str
    ppl_ratio: float  # perplexity / the reference's on the calibration tokens (1: the file's stored blocks)
    tok_s: float | None  # batch-1 decode tokens/s; None when not timed (missed the quality bar, or the only one)

    @property
    def passes(self) -> bool:
        return self.ppl_ratio <= MAX_PPL_RATIO


def _rank(candidate: Candidate) -> tuple[float, int]:
    """Higher is better: speed, then the earlier place in AUTO_ORDER (fewer bytes per weight)."""
    return candidate.tok_s or 0.0, -AUTO_ORDER.index(candidate.mode)


def pick(candidates: list[Candidate]) -> tuple[str, str]:
    """The chosen mode and why, from measured candidates: the fastest that passes (an untimed one only when it is the
    only one), else fp32."""
    passing = [c for c in candidates if c.mode in AUTO_ORDER and c.passes]
    if not passing:
        return FALLBACK, f"no candidate within {MAX_PPL_RATIO:.2f}x the reference's perplexity"
    best = max(passing, key=_rank)
    others = [c for c in passing if c is not best]
    if not others and best.tok_s is None:
        return best.mode, "the only candidate within the memory target"
    why = f"fastest of {len(passing)} within {MAX_PPL_RATIO:.2f}x the reference's perplexity"
    if others:
        runner = max(others, key=_rank)
        why += f" ({best.tok_s:.1f} vs {runner.mode} {runner.tok_s:.1f} tok/s)"
    return best.mode, why


def table(candidates: list[Candidate]) -> str:
    rows = [
        f"{c.mode:>5} | {c.ppl_ratio:.4f} | " + (f"{c.tok_s:.1f}" if c.tok_s is not None else "not timed")
        for c in candidates
    ]
    return "\n".join(["mode  | ppl/ref  | tok/s (batch 1)"] + rows)


def perplexity(model: LlamaModel, token_ids: list[int], chunk: int = 256) -> float:
    """exp(mean negative log-likelihood) of each token after the first, prefilled in chunks of `chunk` tokens with
    every row's logits kept (a whole long text at once would hold [T, vocabulary] float32 logits)."""
    if len(token_ids) < 2:
        raise ValueError("perplexity needs at least two tokens")
    cfg: LlamaConfig = model.cfg
    n_blocks = -(-len(token_ids) // _BLOCK)
    kv = KVCache(cfg.n_layers, n_blocks * _BLOCK, cfg.n_kv_heads, cfg.head_dim, model.dtype)
    block_table = list(range(n_blocks))
    targets = torch.tensor(token_ids[1:])
    nll = 0.0
    with torch.inference_mode():
        for start in range(0, len(token_ids) - 1, chunk):
            piece = token_ids[start : min(start + chunk, len(token_ids) - 1)]
            batch, _ = build_step_batch([ScheduledChunk(piece, start, block_table, True)], _BLOCK)
            # every row on the integer path: that is what decodes, and so what generates the tokens
            batch = replace(batch, logit_rows=torch.arange(len(piece)), narrow_rows=len(piece))
            logits = model.forward(batch, kv)
            nll += F.cross_entropy(logits, targets[start : start + len(piece)], reduction="sum").item()
    return math.exp(nll / (len(token_ids) - 1))


def decode_speed(model: LlamaModel, token_ids: list[int], steps: int = SPEED_STEPS) -> float:
    """Batch-1 decode tokens/s: the median of `steps` timed single-token steps after a short prompt and WARMUP_STEPS
    untimed ones (the engine's own step: build the batch, forward, one row of logits)."""
    cfg: LlamaConfig = model.cfg
    prompt = token_ids[:16] or [0]
    total = len(prompt) + WARMUP_STEPS + steps
    n_blocks = -(-total // _BLOCK)
    kv = KVCache(cfg.n_layers, n_blocks * _BLOCK, cfg.n_kv_heads, cfg.head_dim, model.dtype)
    block_table = list(range(n_blocks))
    times = []
    with torch.inference_mode():
        batch, _ = build_step_batch([ScheduledChunk(prompt, 0, block_table, True)], _BLOCK)
        model.forward(batch, kv)
        for i in range(WARMUP_STEPS + steps):
            token = token_ids[(len(prompt) + i) % len(token_ids)] if token_ids else 0
            start = time.perf_counter()
            batch, _ = build_step_batch([ScheduledChunk([token], len(prompt) + i, block_table, True)], _BLOCK)
            model.forward(batch, kv)
            if i >= WARMUP_STEPS:
                times.append(time.perf_counter() - start)
    return 1.0 / statistics.median(times)


def default_cache_dir() -> Path:
    if os.environ.get("AIOS_CACHE_DIR"):
        return Path(os.environ["AIOS_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aios"


def _cpu_identity() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.split(":")[0].strip() in ("model name", "flags")]
        return "".join(sorted(set(lines)))
    except OSError:
        return os.uname().machine


def _code_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(_CPU_CODE.rglob("*")):
        if path.suffix in (".py", ".cpp", ".h"):
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


class WeightsCache:
    """auto's measured candidates per (CPU, model, dtype, threads, code, rule): see the module docstring."""

    def __init__(self, folder: Path | None = None):
        self.folder = (folder or default_cache_dir()) / "weights-auto"

    @staticmethod
    def key(model_id: str, dtype: torch.dtype, threads: int) -> str:
        parts = [
            _cpu_identity(),
            model_id,
            str(dtype),
            str(threads),
            torch.__version__,
            _code_digest(),
            os.environ.get("AIOS_QGEMM", "1"),
            ",".join(AUTO_ORDER),
            str(MAX_PPL_RATIO),
            str(AUTO_MEMORY_RATIO),
            RULE,
        ]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]

    def load(self, key: str) -> list[Candidate] | None:
        try:
            records = json.loads((self.folder / f"{key}.json").read_text())
            return [
                Candidate(str(r["mode"]), float(r["ppl_ratio"]), None if r["tok_s"] is None else float(r["tok_s"]))
                for r in records
            ]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent or unreadable: measure instead

    def store(self, key: str, candidates: list[Candidate]) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f".{key}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps([asdict(c) for c in candidates]))
            os.replace(tmp, self.folder / f"{key}.json")  # whole or not at all, for a concurrent reader
        except OSError as exc:
            log.warning("weights auto: result not cached (%s)", exc)


Measure = Callable[[LlamaModel, list[int]], float]


def choose_mode(
    cfg: LlamaConfig,
    weights: dict,
    dtype: torch.dtype,
    token_ids: list[int],
    cache: WeightsCache | None = None,
    cache_key: str | None = None,
    measure: Measure = decode_speed,
) -> tuple[str, list[Candidate], LlamaModel | None]:
    """The chosen mode (see the module docstring), the candidates measured (or cached), in AUTO_ORDER, and the chosen
    mode's model when it is still held here (None for fp32, a cached or unmeasured choice, or a model dropped to stay
    within the plan: the caller builds it)."""
    plan = auto_plan(cfg, weights, dtype)
    for mode, why in plan.skipped:
        log.info("weights auto: %s not built (%s)", mode, why)
    cached = cache.load(cache_key) if cache is not None and cache_key else None
    if cached is not None:
        mode, why = pick(cached)
        log.info("weights auto: %s, %s (cached result for this CPU and model)\n%s", mode, why, table(cached))
        return mode, cached, None
    if plan.candidates == (plan.stored,):  # the file's own blocks and nothing else within the target: no measurement
        candidates = [Candidate(plan.stored, 1.0, None)]
        log.info("weights auto: %s, the file's blocks as stored, the only mode within the memory target", plan.stored)
        return plan.stored, candidates, None
    reference = None
    if plan.stored is None:  # float weights: the fp32 model's perplexity, the model freed at once
        reference = perplexity(LlamaModel(cfg, weights, torch.float32, FALLBACK), token_ids)
    order = sorted(plan.candidates, key=lambda m: m != plan.stored)  # the stored reference first
    measured: dict[str, Candidate] = {}
    held: tuple[Candidate, LlamaModel] | None = None
    for mode in order:
        if held is not None and plan.size(held[0].mode) + plan.size(mode) > plan.limit:
            held = None  # both at once would exceed the plan: the best so far is rebuilt by the caller if it wins
        model = LlamaModel(cfg, weights, dtype, mode)
        ppl = perplexity(model, token_ids)
        reference = ppl if mode == plan.stored else reference
        ratio = 1.0 if mode == plan.stored else ppl / reference  # the stored blocks are the reference, exactly
        candidate = Candidate(mode, ratio, measure(model, token_ids) if ratio <= MAX_PPL_RATIO else None)
        measured[mode] = candidate
        if candidate.passes and (held is None or _rank(candidate) > _rank(held[0])):
            held = (candidate, model)  # the previous best is dropped here: one spare model at a time
        del model
    candidates = [measured[m] for m in AUTO_ORDER if m in measured]
    mode, why = pick(candidates)
    log.info("weights auto: %s, %s (reference: %s)\n%s", mode, why, plan.reference, table(candidates))
    if cache is not None and cache_key:
        cache.store(cache_key, candidates)
    return mode, candidates, held[1] if held is not None and held[0].mode == mode else None
