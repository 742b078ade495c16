"""The torch CPU engine: continuous batching over a paged, prefix-cached KV cache (see interface.py for the contract).

Each step() schedules every running sequence: decodes take one token each, prompts advance in chunks within a token
budget so a long prompt never stalls the decodes, then one batched forward runs them all and the sequences whose pending
tokens are done sample their next token.
"""
from __future__ import annotations

import itertools
import os
from typing import Sequence as Seq

import torch

from kernel.engine.block_pool import BlockPool, block_hash
from kernel.engine.checkpoint import Checkpoint, load_checkpoint
from kernel.engine.interface import (Capacity, EngineError, EngineRequest, KVLayout, KVMeta, SamplingParams,
                                     TokenEvent)
from kernel.engine.kv_cache import KVCache, slot_runs
from kernel.engine.model import LlamaModel
from kernel.engine.sampler import generator_state, new_generator, sample
from kernel.engine.sequence import Sequence
from kernel.engine.step_batch import ScheduledChunk, build_step_batch
from kernel.engine.text_stream import TextStream

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


class TorchEngine:
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
        self.pool = BlockPool(n_blocks, block_size, caching=prefix_cache)
        self.kv = KVCache(cfg.n_layers, n_blocks * block_size, cfg.n_kv_heads, cfg.head_dim, DTYPES[dtype])
        self.block_size = block_size
        self.max_batch = max_batch
        self.prefill_chunk = prefill_chunk
        self.max_context = min(cfg.max_context, n_blocks * block_size)
        self._eos = tuple(checkpoint.tokenizer.eos_ids)
        self._running: dict[str, Sequence] = {}        # in admission order
        self._preempted: dict[str, Sequence] = {}      # lost their blocks to a decode; recomputed when blocks free up
        self._finished: dict[str, Sequence] = {}       # finished in the last step: save_kv may still copy them
        self._admissions = itertools.count()

    @classmethod
    def from_path(cls, model: str | None = None, dtype: str = "float32", **options) -> "TorchEngine":
        if dtype not in DTYPES:
            raise EngineError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        return cls(load_checkpoint(model, DTYPES[dtype]), dtype, **options)

    # ---- description -------------------------------------------------------------------------------------------
    def layout(self) -> KVLayout:
        return self._layout

    def capacity(self) -> Capacity:
        return Capacity(free_slots=self.pool.num_available() * self.block_size,
                        total_slots=self.pool.n_blocks * self.block_size,
                        running=len(self._running) + len(self._preempted), max_batch=self.max_batch,
                        max_context=self.max_context)

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def detokenize(self, ids: Seq[int]) -> str:
        return self.tokenizer.decode(ids)

    def apply_chat_template(self, messages: list[dict]) -> list[int]:
        return self.tokenizer.apply_chat_template(messages)

    def eos_token_ids(self) -> tuple[int, ...]:
        return self._eos

    def has_work(self) -> bool:
        return bool(self._running or self._preempted)

    def request_ids(self) -> list[str]:
        """Every request holding KV: running, waiting to recompute, or finished in the last step."""
        return [*self._running, *self._preempted, *self._finished]

    # ---- admission -----------------------------------------------------------------------------------------------
    def add(self, req: EngineRequest) -> None:
        seq = self._new_sequence(req, rng_state=req.rng_state)
        cached, seq.last_hash = self.pool.match_prefix(seq.token_ids, len(seq.token_ids) - 1)
        self._allocate(seq, cached)
        seq.num_registered = len(cached)
        seq.num_computed = len(cached) * self.block_size
        self._running[seq.req_id] = seq

    def load_kv(self, req: EngineRequest, meta: KVMeta, src: memoryview) -> None:
        if meta.layout != self._layout:
            raise EngineError(f"snapshot layout {meta.layout} does not match this engine's {self._layout}")
        if tuple(req.token_ids[:len(meta.token_ids)]) != tuple(meta.token_ids):
            raise EngineError("the snapshot's tokens are not a prefix of the request's tokens")
        if not 0 < meta.n_kv_tokens <= len(meta.token_ids) or src.nbytes < meta.nbytes:
            raise EngineError(f"inconsistent snapshot: {meta.n_kv_tokens} KV tokens, {src.nbytes} bytes given")
        seq = self._new_sequence(req, rng_state=req.rng_state if req.rng_state is not None else meta.rng_state)
        self._allocate(seq, [])
        # At least the last token is recomputed, so the next step has logits to sample from.
        n_kv = min(meta.n_kv_tokens, len(seq.token_ids) - 1)
        self.kv.load(slot_runs(seq.block_table, self.block_size, n_kv), src, meta.n_kv_tokens)
        seq.num_computed = n_kv
        self._register_full_blocks(seq)
        self._running[seq.req_id] = seq

    def _new_sequence(self, req: EngineRequest, rng_state: bytes | None) -> Sequence:
        self._drop_finished()
        if not isinstance(req.params, SamplingParams):
            raise EngineError("params must be SamplingParams")
        req.params.validate()
        if not req.prompt_ids:
            raise EngineError("empty prompt")
        if req.req_id in self._running or req.req_id in self._preempted:
            raise EngineError(f"request id {req.req_id!r} is already running")
        tokens = list(req.token_ids)
        if any(not isinstance(t, int) or not 0 <= t < self.model.cfg.vocab_size for t in tokens):
            raise EngineError(f"token ids must be integers in [0, {self.model.cfg.vocab_size})")
        if len(tokens) >= self.max_context:
            raise EngineError(f"prompt of {len(tokens)} tokens leaves no room in a context of {self.max_context}")
        if len(req.output_ids) >= req.params.max_tokens:
            raise EngineError(f"request already produced {len(req.output_ids)} of max_tokens={req.params.max_tokens}")
        if len(self._running) + len(self._preempted) >= self.max_batch:
            raise EngineError(f"batch full ({self.max_batch} sequences)")
        decode = self.tokenizer.decode
        return Sequence(req.req_id, req.params, tokens, len(req.prompt_ids),
                        new_generator(req.params.seed, rng_state),
                        TextStream(decode, req.params.stop, req.output_ids), next(self._admissions))

    def _allocate(self, seq: Sequence, cached: list[int]) -> None:
        """Give seq blocks for all its tokens: the cached prefix blocks, then fresh ones."""
        needed = -(-len(seq.token_ids) // self.block_size) - len(cached)
        if needed > self.pool.num_available():
            self.pool.release(cached)
            raise EngineError(f"not enough free KV slots: {needed * self.block_size} needed, "
                              f"{self.pool.num_available() * self.block_size} free")
        seq.block_table = cached + self.pool.allocate(needed)

    # ---- removal -------------------------------------------------------------------------------------------------
    def abort(self, req_id: str) -> None:
        for table in (self._running, self._preempted, self._finished):
            seq = table.pop(req_id, None)
            if seq is not None:
                self._free(seq)

    def _free(self, seq: Sequence) -> None:
        self.pool.release(seq.block_table)
        seq.block_table = []

    def _drop_finished(self) -> None:
        for seq in self._finished.values():
            self._free(seq)
        self._finished.clear()

    # ---- snapshots -----------------------------------------------------------------------------------------------
    def _lookup(self, req_id: str) -> Sequence:
        seq = self._running.get(req_id) or self._finished.get(req_id) or self._preempted.get(req_id)
        if seq is None:
            raise EngineError(f"unknown request id {req_id!r}")
        return seq

    def kv_nbytes(self, req_id: str) -> int:
        return self._lookup(req_id).num_computed * self.kv.bytes_per_token

    def save_kv(self, req_id: str, dst: memoryview) -> KVMeta:
        seq = self._lookup(req_id)
        nbytes = seq.num_computed * self.kv.bytes_per_token
        if dst.nbytes < nbytes:
            raise EngineError(f"destination holds {dst.nbytes} bytes, {nbytes} needed")
        if nbytes:
            self.kv.save(slot_runs(seq.block_table, self.block_size, seq.num_computed), seq.num_computed, dst)
        return KVMeta(self._layout, tuple(seq.token_ids), seq.prompt_len, seq.num_computed, nbytes,
                      generator_state(seq.generator))

    # ---- the step ------------------------------------------------------------------------------------------------
    def step(self) -> list[TokenEvent]:
        self._drop_finished()
        self._resume_preempted()
        scheduled = self._schedule()
        if not scheduled:
            return []
        batch, sampled = build_step_batch([chunk for _, chunk in scheduled], self.block_size)
        with torch.inference_mode():
            logits = self.model.forward(batch, self.kv)
        for seq, chunk in scheduled:
            seq.num_computed += len(chunk.token_ids)
            self._register_full_blocks(seq)
        seqs = [scheduled[i][0] for i in sampled]
        tokens = sample(logits, [s.params for s in seqs], [s.generator for s in seqs])
        return [self._append(seq, token) for seq, token in zip(seqs, tokens)]

    def _schedule(self) -> list[tuple[Sequence, ScheduledChunk]]:
        """Decodes for every running sequence that has one; prompt chunks within the prefill budget."""
        scheduled, budget = [], self.prefill_chunk
        for seq in list(self._running.values()):
            if seq.req_id not in self._running:      # preempted below to make room for an older sequence
                continue
            n = 1 if seq.pending == 1 else min(seq.pending, budget)
            if n == 0 or (n == 1 and not self._ensure_decode_block(seq)):
                continue
            if seq.pending > 1:
                budget -= n
            chunk = seq.token_ids[seq.num_computed:seq.num_computed + n]
            scheduled.append((seq, ScheduledChunk(chunk, seq.num_computed, seq.block_table, n == seq.pending)))
        return [(seq, chunk) for seq, chunk in scheduled if seq.req_id in self._running]

    def _ensure_decode_block(self, seq: Sequence) -> bool:
        """Make sure seq has a slot for its next token, preempting the youngest sequences (to recompute later) when
        the pool is exhausted. False if seq itself had to go."""
        while len(seq.block_table) * self.block_size < len(seq.token_ids):
            if self.pool.num_available():
                seq.block_table += self.pool.allocate(1)
                continue
            victim = max(self._running.values(), key=lambda s: s.admission)
            self._preempt(victim)
            if victim is seq:
                return False
        return True

    def _preempt(self, seq: Sequence) -> None:
        del self._running[seq.req_id]
        self._free(seq)
        seq.num_computed = seq.num_registered = 0
        self._preempted[seq.req_id] = seq

    def _resume_preempted(self) -> None:
        for seq in list(self._preempted.values()):
            cached, last_hash = self.pool.match_prefix(seq.token_ids, len(seq.token_ids) - 1)
            needed = -(-len(seq.token_ids) // self.block_size) - len(cached)
            if needed > self.pool.num_available():
                self.pool.release(cached)
                return
            seq.block_table = cached + self.pool.allocate(needed)
            seq.num_registered, seq.last_hash = len(cached), last_hash
            seq.num_computed = len(cached) * self.block_size
            self._running[seq.req_id] = self._preempted.pop(seq.req_id)

    def _register_full_blocks(self, seq: Sequence) -> None:
        bs = self.block_size
        for index in range(seq.num_registered, seq.num_computed // bs):
            seq.last_hash = block_hash(seq.last_hash, seq.token_ids[index * bs:(index + 1) * bs])
            self.pool.register(seq.block_table[index], seq.last_hash)
        seq.num_registered = max(seq.num_registered, seq.num_computed // bs)

    def _append(self, seq: Sequence, token: int) -> TokenEvent:
        seq.token_ids.append(token)
        if token in self._eos and not seq.params.ignore_eos:
            return self._finish(seq, token, seq.stream.flush(), "eos")
        text, stopped = seq.stream.push(token)
        if stopped:
            return self._finish(seq, -1, text, "stop")
        if seq.num_output >= seq.params.max_tokens or len(seq.token_ids) >= self.max_context:
            return self._finish(seq, token, text + seq.stream.flush(), "length")
        return TokenEvent(seq.req_id, token, text)

    def _finish(self, seq: Sequence, token: int, text: str, reason: str) -> TokenEvent:
        self._finished[seq.req_id] = self._running.pop(seq.req_id)
        return TokenEvent(seq.req_id, token, text, finished=True, finish_reason=reason)
