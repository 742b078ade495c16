"""The torch CPU engine: continuous batching over a paged, prefix-cached KV cache (see interface.py for the contract).

Before anything is allocated the engine estimates what the model, its KV cache and a step's scratch will hold
(memory_plan.py) and refuses with ModelLoadError, naming both numbers, when that is more than the machine has.

Each step() schedules every running sequence: decodes take one token each, prompts advance in chunks within a token
budget so a long prompt never stalls the decodes, then one batched forward runs them all and the sequences whose pending
tokens are done sample their next token. Which sequences run, their blocks, prefix sharing, preemption and finishing are
the SequenceTable's (shared with the GPU engine); this module owns the model, its KV tensors and the step's schedule.
"""

from __future__ import annotations

import logging
import time

import torch

from kernel.engine.core.block_pool import BlockPool
from kernel.engine.core.interface import EngineError, KVLayout, TokenEvent
from kernel.engine.core.paged_engine import PagedEngine
from kernel.engine.core.sequence import Sequence
from kernel.engine.core.sequence_table import SequenceTable
from kernel.engine.core.token_choice import TokenChooser
from kernel.engine.cpu import memory_plan
from kernel.engine.cpu.kv_cache import KVCache, slot_runs
from kernel.engine.cpu.model import LlamaModel
from kernel.engine.cpu.quant_select import CALIBRATION_TEXT, Candidate, WeightsCache, choose_mode
from kernel.engine.cpu.quant_weights import WEIGHT_MODES, natural_mode
from kernel.engine.cpu.step_batch import ScheduledChunk, build_step_batch
from kernel.engine.cpu.threads import ThreadGovernor
from kernel.engine.factory import default_threads
from kernel.engine.loading.checkpoint import Checkpoint, load_checkpoint
from kernel.engine.structured.grammar import grammar_compiler

log = logging.getLogger(__name__)

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


class TorchEngine(PagedEngine):
    def __init__(
        self,
        checkpoint: Checkpoint,
        dtype: str = "float32",
        kv_budget_tokens: int = 16384,
        max_batch: int = 32,
        prefill_chunk: int = 256,
        block_size: int = 16,
        threads: int | None = None,
        prefix_cache: bool = True,
        weights: str | None = None,
        memory_available: int | None = None,
        adaptive_threads: bool = True,
    ):
        """memory_available: the bytes the engine may allocate (None: measured, memory_plan.available_memory).
        dtype: activations, norms and the KV cache. weights: how the matrices are stored and multiplied —
        "int4", "int8", "bf16", "fp32", or "auto" (the fastest, timed here, of those whose measured perplexity
        holds: quant_select.py; cached per CPU and model);
        None → the compute dtype's own float, as before weights modes. int4/int8 read a quantized GGUF's codes
        directly when the checkpoint was loaded with quantized=True (from_path does); otherwise they quantize.
        threads: the most the step runs (None: factory.default_threads). adaptive_threads: the step runs fewer while
        its threads wait for cores other processes hold (threads.py), False: always `threads`."""
        if dtype not in DTYPES:
            raise EngineError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if weights is not None and weights not in WEIGHT_MODES:
            raise EngineError(f"weights must be one of {', '.join(WEIGHT_MODES)}, got {weights!r}")
        if kv_budget_tokens < block_size or max_batch <= 0 or prefill_chunk <= 0:
            raise EngineError("kv_budget_tokens must hold one block; max_batch and prefill_chunk must be positive")
        # The physical cores this process may use by default (factory.default_threads: SMT siblings count once). With
        # other busy processes on the same cores every parallel region waits for a descheduled thread, so the step
        # runs fewer threads while its threads measurably wait for cores (threads.py), back up when they clear.
        if threads is not None and threads <= 0:
            raise EngineError(f"threads must be positive, got {threads}")
        self.threads = threads or default_threads()
        torch.set_num_threads(self.threads)
        self.thread_governor = ThreadGovernor(self.threads, torch.set_num_threads, adaptive=adaptive_threads)
        cfg = checkpoint.config
        n_blocks = kv_budget_tokens // block_size
        self.memory = memory_plan.estimate(
            cfg,
            checkpoint.weights,
            weights or natural_mode(DTYPES[dtype]),
            DTYPES[dtype],
            n_blocks * block_size,
            max_batch,
            prefill_chunk,
        )
        available, source = (
            (memory_available, "given") if memory_available is not None else memory_plan.available_memory()
        )
        memory_plan.check(self.memory, available, source)
        log.info(
            "memory: needs %s; %s GiB available (%s)",
            self.memory.describe(),
            "?" if available is None else f"{available / memory_plan.GIB:.2f}",
            source,
        )
        self.tokenizer = checkpoint.tokenizer
        self.weight_ratios: dict[str, float] = {}  # auto: each mode's perplexity / the reference's
        self.weight_choice: list[Candidate] = []  # auto: each mode's perplexity ratio and batch-1 tok/s
        model = None
        if weights == "auto":
            # measured at this thread count, on this CPU, or reused from the cache keyed by them (quant_select.py)
            calibration = checkpoint.tokenizer.encode(CALIBRATION_TEXT)[: cfg.max_context]
            key = WeightsCache.key(checkpoint.model_id, DTYPES[dtype], self.threads)
            weights, self.weight_choice, model = choose_mode(
                cfg, checkpoint.weights, DTYPES[dtype], calibration, WeightsCache(), key
            )
            self.weight_ratios = {c.mode: c.ppl_ratio for c in self.weight_choice}
        self.model = model or LlamaModel(cfg, checkpoint.weights, DTYPES[dtype], weights)
        self.weights = self.model.mode
        # The K/V a step writes depends on the weights that computed it: a snapshot taken under int4 must not resume
        # under bf16. The compute dtype's own float keeps the checkpoint's id; other modes are named in it.
        # The family is named too (the layout records the shape): a snapshot never restores into another model.
        model_id = f"{checkpoint.model_id}+family={cfg.family.value}"
        if self.weights != natural_mode(DTYPES[dtype]):
            model_id += f"+weights={self.weights}"
        self._layout = KVLayout(model_id, cfg.n_layers, cfg.n_kv_heads, cfg.head_dim, dtype)
        self.kv = KVCache(cfg.n_layers, n_blocks * block_size, cfg.n_kv_heads, cfg.head_dim, DTYPES[dtype])
        self.block_size = block_size
        self.prefill_chunk = prefill_chunk
        self._chooser = TokenChooser()
        self._table = SequenceTable(
            BlockPool(n_blocks, block_size, caching=prefix_cache),
            max_batch,
            cfg.max_context,
            cfg.vocab_size,
            tuple(checkpoint.tokenizer.eos_ids),
            self.tokenizer.decode,
            grammar_compiler(self.tokenizer, cfg.vocab_size),
        )

    @classmethod
    def from_path(
        cls, model: str | None = None, dtype: str = "float32", weights: str | None = None, **options
    ) -> TorchEngine:
        """weights: see __init__. A GGUF's matrices are read from the file one product at a time (no copy of the model
        before the engine's own; auto compares with the file's own blocks, and builds an fp32 reference only for
        float weights: quant_select.py)."""
        if dtype not in DTYPES:
            raise EngineError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if weights is not None and weights not in WEIGHT_MODES:
            raise EngineError(f"weights must be one of {', '.join(WEIGHT_MODES)}, got {weights!r}")
        # A GGUF file's matrices stay in its memory map (GGUFBlocks), whatever the mode: each is decoded only when its
        # product is built. auto's fp32 reference (float weights) needs the float tensors at full precision.
        checkpoint = load_checkpoint(model, torch.float32 if weights == "auto" else DTYPES[dtype], quantized=True)
        return cls(checkpoint, dtype, weights=weights, **options)

    # ---- K/V between the cache and a snapshot (PagedEngine's hooks) ------------------------------------------------
    def _kv_bytes(self, n_tokens: int) -> int:
        return n_tokens * self.kv.bytes_per_token

    def _copy_in(self, seq: Sequence, n_kv: int, src: memoryview, src_tokens: int) -> None:
        self.kv.load(slot_runs(seq.block_table, self.block_size, n_kv), src, src_tokens)

    def _copy_out(self, seq: Sequence, n_tokens: int, dst: memoryview) -> None:
        self.kv.save(slot_runs(seq.block_table, self.block_size, n_tokens), n_tokens, dst)

    # ---- the step ------------------------------------------------------------------------------------------------
    def step(self) -> list[TokenEvent]:
        self._table.begin_step()
        scheduled = self._schedule()
        if not scheduled:
            return []
        self.thread_governor.before_step()
        started = time.perf_counter()
        batch, sampled = build_step_batch([chunk for _, chunk in scheduled], self.block_size)
        with torch.inference_mode():
            logits = self.model.forward(batch, self.kv)
        self.thread_governor.after_step(time.perf_counter() - started)
        for seq, chunk in scheduled:
            self._table.advance(seq, len(chunk.token_ids))
        seqs = [scheduled[i][0] for i in sampled]
        return self._table.emit(seqs, self._chooser.choose(seqs, logits))

    def _schedule(self) -> list[tuple[Sequence, ScheduledChunk]]:
        """Decodes for every running sequence that has one; prompt chunks within the prefill budget."""
        scheduled, budget = [], self.prefill_chunk
        for seq in self._table.running():
            if not self._table.is_running(seq):  # preempted below to make room for an older sequence
                continue
            n = 1 if seq.pending == 1 else min(seq.pending, budget)
            if n == 0 or (n == 1 and not self._table.ensure_decode_block(seq)):
                continue
            if seq.pending > 1:
                budget -= n
            chunk = seq.token_ids[seq.num_computed : seq.num_computed + n]
            scheduled.append((seq, ScheduledChunk(chunk, seq.num_computed, seq.block_table, n == seq.pending)))
        return [(seq, chunk) for seq, chunk in scheduled if self._table.is_running(seq)]
