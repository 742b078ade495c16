"""The ExLlamaV2 engine: EXL2-quantised models on CUDA GPUs, behind the same interface as the torch CPU engine.

Design: we drive ExLlamaV2's model.forward_chunk ourselves over a paged cache, instead of wrapping the dynamic
generator's iterate(). The generator owns its page table, defragments the cache by moving pages, and decides by itself
when jobs start and how much they prefill: a sequence's K/V has no stable address to copy out and back, admission is not
the kernel's to decide, and a job cannot be admitted with its K/V already in the cache. Owning the page table (the
BlockPool the CPU engine uses, 256-token pages as flash-attn's paged kernel wants) gives each sequence pages only we
move, so:
- continuous batching is exact: each step() runs one batched decode forward over every sequence with a token to
  sample (q_len 1, one block_index row and cache_seqlens entry each), plus prompt chunks of sequences still reading their
  prompt, within a per-step budget so a long prompt does not stall running decodes. ExLlamaV2's paged forward takes one
  q_len per batch, so each prompt chunk is a batch-of-one forward, as in the dynamic generator;
- save_kv / load_kv gather / scatter the sequence's rows of every layer's K and V (exllama_kv_copy.py);
- full pages are registered by prefix hash: a request that starts like a cached one (an agent's previous turn, a shared
  system prompt) shares those pages and prefills only the rest;
- when a decode needs a page and none is free, the youngest sequence is preempted inside the engine (pages freed, tokens
  kept) and recomputed when pages free up, as the CPU engine does.
Sampling is the CPU engine's (sampler.py) on logits copied to the host, as the dynamic generator also samples on the
host: a seed gives the same draws on any machine, and the RNG state travels with a KV snapshot.

exllamav2 and CUDA are imported only inside from_path() (exllama_runtime.py), so this module imports anywhere.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Sequence as Seq

import torch

from kernel.engine.block_pool import ROOT_HASH, BlockPool, block_hash
from kernel.engine.exllama_kv_copy import KVCopier
from kernel.engine.exllama_runtime import PagedRuntime, load_runtime
from kernel.engine.interface import (Capacity, EngineError, EngineRequest, KVLayout, KVMeta, SamplingParams,
                                     TokenEvent)
from kernel.engine.sampler import generator_state, new_generator, sample
from kernel.engine.sequence import Sequence
from kernel.engine.text_stream import TextStream
from kernel.engine.tokenizer import TextTokenizer


class ExLlamaV2Engine:
    def __init__(self, runtime: PagedRuntime, tokenizer: TextTokenizer, max_batch: int = 16,
                 prefill_chunk: int = 512, prefix_cache: bool = True):
        if not 1 <= max_batch <= runtime.max_chunk:
            raise EngineError(f"max_batch must be in [1, {runtime.max_chunk}], got {max_batch}")
        if prefill_chunk < 1:
            raise EngineError(f"prefill_chunk must be positive, got {prefill_chunk}")
        self._runtime = runtime
        self._tokenizer = tokenizer
        self._max_batch = max_batch
        self._prefill_chunk = min(prefill_chunk, runtime.max_chunk)
        self._pool = BlockPool(runtime.n_pages, runtime.page_size, caching=prefix_cache)
        self._page = runtime.page_size
        self._copier = KVCopier(runtime.kv_tensors())
        self._max_context = min(runtime.max_context, runtime.n_pages * runtime.page_size)
        self._eos = tuple(runtime.eos_token_ids()) or tuple(tokenizer.eos_ids)
        self._running: dict[str, Sequence] = {}        # in admission order: prompt budget goes to the oldest first
        self._preempted: dict[str, Sequence] = {}      # lost their pages to a decode; recomputed when pages free up
        self._finished: dict[str, Sequence] = {}       # finished in the last step: save_kv may still copy them
        self._admissions = itertools.count()

    @classmethod
    def from_path(cls, model: str | os.PathLike | None, kv_budget_tokens: int = 16384, max_batch: int = 16,
                  prefill_chunk: int = 512, prefix_cache: bool = True) -> "ExLlamaV2Engine":
        """Load an EXL2 model folder (config.json, *.safetensors, tokenizer.json) onto the GPU(s)."""
        if model is None:
            raise EngineError("the ExLlamaV2 engine needs a model folder (EXL2 or fp16 safetensors); none was given")
        model_dir = os.fspath(model)
        runtime = load_runtime(model_dir, kv_budget_tokens, max_batch, prefill_chunk)
        tokenizer = TextTokenizer.from_folder(Path(model_dir), runtime.eos_token_ids())
        return cls(runtime, tokenizer, max_batch=max_batch, prefill_chunk=prefill_chunk, prefix_cache=prefix_cache)

    # ---- description -------------------------------------------------------------------------------------------
    def layout(self) -> KVLayout:
        return self._runtime.layout()

    def capacity(self) -> Capacity:
        return Capacity(free_slots=self._pool.num_available() * self._page, total_slots=self._pool.n_blocks * self._page,
                        running=len(self._running) + len(self._preempted), max_batch=self._max_batch,
                        max_context=self._max_context)

    def eos_token_ids(self) -> tuple[int, ...]:
        return self._eos

    def has_work(self) -> bool:
        return bool(self._running or self._preempted)

    # ---- text --------------------------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise EngineError(f"text must be a string, got {type(text).__name__}")
        return self._tokenizer.encode(text)

    def detokenize(self, ids: Seq[int]) -> str:
        self._check_ids(ids)
        return self._tokenizer.decode(ids)

    def apply_chat_template(self, messages: list[dict]) -> list[int]:
        return self._tokenizer.apply_chat_template(messages)

    # ---- admission ---------------------------------------------------------------------------------------------
    def add(self, req: EngineRequest) -> None:
        seq = self._new_sequence(req, req.rng_state)
        self._allocate(seq, reuse_prefix=True)
        self._running[seq.req_id] = seq

    def load_kv(self, req: EngineRequest, meta: KVMeta, src: memoryview) -> None:
        if meta.layout != self.layout():
            raise EngineError(f"snapshot layout {meta.layout} does not match this engine's {self.layout()}")
        if tuple(req.token_ids[:len(meta.token_ids)]) != tuple(meta.token_ids):
            raise EngineError(f"request {req.req_id!r} does not extend the snapshot's tokens")
        if not 0 <= meta.n_kv_tokens <= len(meta.token_ids) or meta.nbytes != self._copier.nbytes(meta.n_kv_tokens):
            raise EngineError(f"inconsistent snapshot: K/V of {meta.n_kv_tokens} tokens in {meta.nbytes} bytes")
        if src.nbytes < meta.nbytes:
            raise EngineError(f"snapshot needs {meta.nbytes} bytes, the source holds {src.nbytes}")
        seq = self._new_sequence(req, req.rng_state if req.rng_state is not None else meta.rng_state)
        self._allocate(seq, reuse_prefix=False)
        # At least the last token is recomputed, so the next step has logits to sample from. The rows past n_kv in
        # the snapshot are K/V of tokens we recompute anyway; they are not copied.
        n_kv = min(meta.n_kv_tokens, len(seq.token_ids) - 1)
        self._copier.load(self._slots(seq, n_kv), src)
        seq.num_computed = n_kv
        self._register_full_pages(seq)
        self._running[seq.req_id] = seq

    def _new_sequence(self, req: EngineRequest, rng_state: bytes | None) -> Sequence:
        self._drop_finished()
        if not isinstance(req.req_id, str) or not req.req_id:
            raise EngineError("req_id must be a non-empty string")
        if not isinstance(req.params, SamplingParams):
            raise EngineError("params must be SamplingParams")
        req.params.validate()
        if not req.prompt_ids:
            raise EngineError("empty prompt")
        if req.req_id in self._running or req.req_id in self._preempted:
            raise EngineError(f"request id {req.req_id!r} is already running")
        tokens = list(req.token_ids)
        self._check_ids(tokens)
        if len(tokens) >= self._max_context:
            raise EngineError(f"prompt of {len(tokens)} tokens leaves no room in a context of {self._max_context}")
        if len(req.output_ids) >= req.params.max_tokens:
            raise EngineError(f"request already produced {len(req.output_ids)} of max_tokens={req.params.max_tokens}")
        if len(self._running) + len(self._preempted) >= self._max_batch:
            raise EngineError(f"batch full ({self._max_batch} sequences)")
        return Sequence(req.req_id, req.params, tokens, len(req.prompt_ids), new_generator(req.params.seed, rng_state),
                        TextStream(self._tokenizer.decode, req.params.stop, req.output_ids), next(self._admissions))

    def _allocate(self, seq: Sequence, reuse_prefix: bool) -> None:
        """Give seq pages for all its tokens: cached pages holding its prefix (if reuse_prefix), then fresh ones.
        Raises EngineError if the pool is short."""
        cached, last_hash = ([], ROOT_HASH)
        if reuse_prefix:
            cached, last_hash = self._pool.match_prefix(seq.token_ids, len(seq.token_ids) - 1)
        needed = -(-len(seq.token_ids) // self._page) - len(cached)
        if needed > self._pool.num_available():
            self._pool.release(cached)
            raise EngineError(f"not enough free KV slots: {needed * self._page} needed, "
                              f"{self._pool.num_available() * self._page} free")
        seq.block_table = cached + self._pool.allocate(needed)
        seq.num_registered, seq.last_hash = len(cached), last_hash
        seq.num_computed = len(cached) * self._page

    def _check_ids(self, ids: Seq[int]) -> None:
        vocab = self._runtime.vocab_size
        if any(not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < vocab for t in ids):
            raise EngineError(f"token ids must be integers in [0, {vocab})")

    # ---- removal and snapshots ---------------------------------------------------------------------------------
    def abort(self, req_id: str) -> None:
        for table in (self._running, self._preempted, self._finished):
            seq = table.pop(req_id, None)
            if seq is not None:
                self._free(seq)

    def _free(self, seq: Sequence) -> None:
        self._pool.release(seq.block_table)
        seq.block_table = []

    def _drop_finished(self) -> None:
        for seq in self._finished.values():
            self._free(seq)
        self._finished.clear()

    def _lookup(self, req_id: str) -> Sequence:
        seq = self._running.get(req_id) or self._finished.get(req_id) or self._preempted.get(req_id)
        if seq is None:
            raise EngineError(f"unknown request id {req_id!r}")
        return seq

    def kv_nbytes(self, req_id: str) -> int:
        return self._copier.nbytes(self._lookup(req_id).num_computed)

    def save_kv(self, req_id: str, dst: memoryview) -> KVMeta:
        seq = self._lookup(req_id)
        nbytes = self._copier.nbytes(seq.num_computed)
        if dst.nbytes < nbytes:
            raise EngineError(f"destination holds {dst.nbytes} bytes, {nbytes} needed")
        self._copier.save(self._slots(seq, seq.num_computed), dst)
        return KVMeta(self.layout(), tuple(seq.token_ids), seq.prompt_len, seq.num_computed, nbytes,
                      generator_state(seq.generator))

    def _slots(self, seq: Sequence, n_tokens: int) -> list[int]:
        """Flat cache row of each of seq's first n_tokens tokens: page * page_size + offset in the page."""
        return [seq.block_table[t // self._page] * self._page + t % self._page for t in range(n_tokens)]

    # ---- the step ----------------------------------------------------------------------------------------------
    def step(self) -> list[TokenEvent]:
        self._drop_finished()
        self._resume_preempted()
        # Decodes claim their pages first (possibly preempting the youngest), then prompts run in what is left.
        decoding = [s for s in list(self._running.values()) if s.pending == 1 and self._ensure_decode_page(s)]
        decoding = [s for s in decoding if s.req_id in self._running]   # a later one may have preempted it
        sampled: list[tuple[Sequence, torch.Tensor]] = []           # (sequence, its next-token logits [vocab])
        budget = self._prefill_chunk
        for seq in [s for s in self._running.values() if s.pending > 1]:
            n = min(seq.pending, budget)
            if n == 0:
                break
            logits = self._forward([seq], n, want_logits=n == seq.pending)
            budget -= n
            if logits is not None:
                sampled.append((seq, logits[0]))
        if decoding:
            sampled += zip(decoding, self._forward(decoding, 1, want_logits=True))
        if not sampled:
            return []
        seqs = [seq for seq, _ in sampled]
        tokens = sample(torch.stack([row for _, row in sampled]), [s.params for s in seqs], [s.generator for s in seqs])
        return [self._append(seq, token) for seq, token in zip(seqs, tokens)]

    def _forward(self, seqs: list[Sequence], n: int, want_logits: bool) -> torch.Tensor | None:
        """Run each sequence's next n tokens (its K/V appended to its pages); logits [batch, vocab] if asked."""
        width = max(len(s.block_table) for s in seqs)
        # Padding entries name page 0 and are never read: flash-attn stops at each row's length.
        block_index = torch.tensor([s.block_table + [0] * (width - len(s.block_table)) for s in seqs],
                                   dtype=torch.int32)                                     # [batch, pages]
        seqlens = torch.tensor([s.num_computed for s in seqs], dtype=torch.int32)          # [batch]
        input_ids = torch.tensor([s.token_ids[s.num_computed:s.num_computed + n] for s in seqs],
                                 dtype=torch.long)                                        # [batch, n]
        logits = self._runtime.forward(input_ids, block_index, seqlens, want_logits)
        for seq in seqs:
            seq.num_computed += n
            self._register_full_pages(seq)
        return logits

    def _ensure_decode_page(self, seq: Sequence) -> bool:
        """Make sure seq has a cache row for its next token, preempting the youngest sequences (to recompute later)
        when the pool is exhausted. False if seq itself had to go."""
        while len(seq.block_table) * self._page < len(seq.token_ids):
            if self._pool.num_available():
                seq.block_table += self._pool.allocate(1)
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
            try:
                self._allocate(seq, reuse_prefix=True)
            except EngineError:
                return                                     # oldest first: the rest wait too
            self._running[seq.req_id] = self._preempted.pop(seq.req_id)

    def _register_full_pages(self, seq: Sequence) -> None:
        """Name each page the sequence has filled by its prefix hash, for later requests to share."""
        for index in range(seq.num_registered, seq.num_computed // self._page):
            seq.last_hash = block_hash(seq.last_hash, seq.token_ids[index * self._page:(index + 1) * self._page])
            self._pool.register(seq.block_table[index], seq.last_hash)
        seq.num_registered = max(seq.num_registered, seq.num_computed // self._page)

    def _append(self, seq: Sequence, token: int) -> TokenEvent:
        seq.token_ids.append(token)
        if token in self._eos and not seq.params.ignore_eos:
            return self._finish(seq, token, seq.stream.flush(), "eos")
        text, stopped = seq.stream.push(token)
        if stopped:
            return self._finish(seq, -1, text, "stop")
        if seq.num_output >= seq.params.max_tokens or len(seq.token_ids) >= self._max_context:
            return self._finish(seq, token, text + seq.stream.flush(), "length")
        return TokenEvent(seq.req_id, token, text)

    def _finish(self, seq: Sequence, token: int, text: str, reason: str) -> TokenEvent:
        seq.finish_reason = reason
        self._finished[seq.req_id] = self._running.pop(seq.req_id)
        return TokenEvent(seq.req_id, token, text, finished=True, finish_reason=reason)
