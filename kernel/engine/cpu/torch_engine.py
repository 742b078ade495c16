"""The torch CPU engine: continuous batching over a paged, prefix-cached KV cache (see interface.py for the contract).

Each step() schedules every running sequence: decodes take one token each, prompts advance in chunks within a token
budget so a long prompt never stalls the decodes, then one batched forward runs them all and the sequences whose pending
tokens are done sample their next token. Which sequences run, their blocks, prefix sharing, preemption and finishing are
the SequenceTable's (shared with the GPU engine); this module owns the model, its KV tensors and the step's schedule.
"""
from __future__ import annotations

import os

import torch

from kernel.engine.core.block_pool import BlockPool
from kernel.engine.loading.checkpoint import Checkpoint, load_checkpoint
from kernel.engine.structured.grammar import grammar_compiler
from kernel.engine.core.interface import EngineError, KVLayout, TokenEvent
from kernel.engine.cpu.kv_cache import KVCache, slot_runs
from kernel.engine.cpu.model import LlamaModel
from kernel.engine.core.paged_engine import PagedEngine
from kernel.engine.core.sequence import Sequence
from kernel.engine.core.sequence_table import SequenceTable
from kernel.engine.core.token_choice import TokenChooser
from kernel.engine.cpu.step_batch import ScheduledChunk, build_step_batch

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


class TorchEngine(PagedEngine):
    def __init__(self, checkpoint: Checkpoint, dtype: str = "float32", kv_budget_tokens: int = 16384,
                 max_batch: int = 32, prefill_chunk: int = 256, block_size: int = 16, threads: int | None = None,
                 prefix_cache: bool = True):
        if dtype not in DTYPES:
            raise EngineError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if kv_budget_tokens < block_size or max_batch <= 0 or prefill_chunk <= 0:
            raise EngineError("kv_budget_tokens must hold one block; max_batch and prefill_chunk must be positive")
        # All cores by default. With other busy processes on the same cores every parallel region waits for a
        # descheduled thread, so a shared machine may be better served by fewer threads.
        torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
        cfg = checkpoint.config
        self.tokenizer = checkpoint.tokenizer
        self.model = LlamaModel(cfg, checkpoint.weights, DTYPES[dtype])
        self._layout = KVLayout(checkpoint.model_id, cfg.n_layers, cfg.n_kv_heads, cfg.head_dim, dtype)
        n_blocks = kv_budget_tokens // block_size
        self.kv = KVCache(cfg.n_layers, n_blocks * block_size, cfg.n_kv_heads, cfg.head_dim, DTYPES[dtype])
        self.block_size = block_size
        self.prefill_chunk = prefill_chunk
        self._chooser = TokenChooser()
        self._table = SequenceTable(BlockPool(n_blocks, block_size, caching=prefix_cache), max_batch, cfg.max_context,
                                    cfg.vocab_size, tuple(checkpoint.tokenizer.eos_ids), self.tokenizer.decode,
                                    grammar_compiler(self.tokenizer, cfg.vocab_size))

    @classmethod
    def from_path(cls, model: str | None = None, dtype: str = "float32", **options) -> "TorchEngine":
        if dtype not in DTYPES:
            raise EngineError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        return cls(load_checkpoint(model, DTYPES[dtype]), dtype, **options)

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
        batch, sampled = build_step_batch([chunk for _, chunk in scheduled], self.block_size)
        with torch.inference_mode():
            logits = self.model.forward(batch, self.kv)
        for seq, chunk in scheduled:
            self._table.advance(seq, len(chunk.token_ids))
        seqs = [scheduled[i][0] for i in sampled]
        return self._table.emit(seqs, self._chooser.choose(seqs, logits))

    def _schedule(self) -> list[tuple[Sequence, ScheduledChunk]]:
        """Decodes for every running sequence that has one; prompt chunks within the prefill budget."""
        scheduled, budget = [], self.prefill_chunk
        for seq in self._table.running():
            if not self._table.is_running(seq):      # preempted below to make room for an older sequence
                continue
            n = 1 if seq.pending == 1 else min(seq.pending, budget)
            if n == 0 or (n == 1 and not self._table.ensure_decode_block(seq)):
                continue
            if seq.pending > 1:
                budget -= n
            chunk = seq.token_ids[seq.num_computed:seq.num_computed + n]
            scheduled.append((seq, ScheduledChunk(chunk, seq.num_computed, seq.block_table, n == seq.pending)))
        return [(seq, chunk) for seq, chunk in scheduled if self._table.is_running(seq)]
