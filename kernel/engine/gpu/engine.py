"""The ExLlamaV2 engine: EXL2-quantised models on CUDA GPUs, behind the same interface as the torch CPU engine.

Design: we drive ExLlamaV2's model.forward_chunk ourselves over a paged cache, instead of wrapping the dynamic
generator's iterate(). The generator owns its page table, defragments the cache by moving pages, and decides by itself
when jobs start and how much they prefill: a sequence's K/V has no stable address to copy out and back, admission is not
the kernel's to decide, and a job cannot be admitted with its K/V already in the cache. Owning the page table (the
BlockPool the CPU engine uses, 256-token pages as flash-attn's paged kernel wants) gives each sequence pages only we
move, so:
- continuous batching is exact: each step() runs one batched decode forward over every sequence with a token to
  sample (q_len 1, one block_index row and cache_seqlens entry each), plus prompt chunks of sequences still reading
  their
  prompt, within a per-step budget so a long prompt does not stall running decodes. ExLlamaV2's paged forward takes one
  q_len per batch, so each prompt chunk is a batch-of-one forward, as in the dynamic generator;
- save_kv / load_kv gather / scatter the sequence's rows of every layer's K and V (exllama_kv_copy.py);
- full pages are registered by prefix hash: a request that starts like a cached one (an agent's previous turn, a shared
  system prompt) shares those pages and prefills only the rest;
- when a decode needs a page and none is free, the youngest sequence is preempted inside the engine (pages freed, tokens
  kept) and recomputed when pages free up.
The sequence, page and prefix bookkeeping (sequence_table.py) is the CPU engine's too; this module owns the ExLlamaV2
runtime, the per-step forwards over its paged cache and the K/V copies.
Sampling is the CPU engine's (sampler.py) on logits copied to the host, as the dynamic generator also samples on the
host: a seed gives the same draws on any machine, and the RNG state travels with a KV snapshot.

exllamav2 and CUDA are imported only inside from_path() (exllama_runtime.py), so this module imports anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from kernel.engine.core.block_pool import BlockPool
from kernel.engine.core.interface import EngineError, TokenEvent
from kernel.engine.core.paged_engine import PagedEngine
from kernel.engine.core.sequence import Sequence
from kernel.engine.core.sequence_table import SequenceTable
from kernel.engine.core.token_choice import TokenChooser
from kernel.engine.gpu.exllama_kv_copy import KVCopier
from kernel.engine.gpu.exllama_runtime import PagedRuntime, load_runtime
from kernel.engine.loading.tokenizer import TextTokenizer
from kernel.engine.structured.grammar import grammar_compiler


class ExLlamaV2Engine(PagedEngine):
    def __init__(
        self,
        runtime: PagedRuntime,
        tokenizer: TextTokenizer,
        max_batch: int = 16,
        prefill_chunk: int = 512,
        prefix_cache: bool = True,
    ):
        if not 1 <= max_batch <= runtime.max_chunk:
            raise EngineError(f"max_batch must be in [1, {runtime.max_chunk}], got {max_batch}")
        if prefill_chunk < 1:
            raise EngineError(f"prefill_chunk must be positive, got {prefill_chunk}")
        self._runtime = runtime
        self.tokenizer = tokenizer
        self._layout = runtime.layout()
        self._prefill_chunk = min(prefill_chunk, runtime.max_chunk)
        self._page = runtime.page_size
        self._copier = KVCopier(runtime.kv_tensors())
        self._chooser = TokenChooser()
        self._table = SequenceTable(
            BlockPool(runtime.n_pages, runtime.page_size, caching=prefix_cache),
            max_batch,
            runtime.max_context,
            runtime.vocab_size,
            tuple(runtime.eos_token_ids()) or tuple(tokenizer.eos_ids),
            tokenizer.decode,
            grammar_compiler(tokenizer, runtime.vocab_size, tuple(runtime.eos_token_ids()) or tuple(tokenizer.eos_ids)),
        )

    @classmethod
    def from_path(
        cls,
        model: str | os.PathLike | None,
        kv_budget_tokens: int = 16384,
        max_batch: int = 16,
        prefill_chunk: int = 512,
        prefix_cache: bool = True,
    ) -> ExLlamaV2Engine:
        """Load an EXL2 model folder (config.json, *.safetensors, tokenizer.json) onto the GPU(s)."""
        if model is None:
            raise EngineError("the ExLlamaV2 engine needs a model folder (EXL2 or fp16 safetensors); none was given")
        model_dir = os.fspath(model)
        runtime = load_runtime(model_dir, kv_budget_tokens, max_batch, prefill_chunk)
        tokenizer = TextTokenizer.from_folder(Path(model_dir), runtime.eos_token_ids())
        return cls(runtime, tokenizer, max_batch=max_batch, prefill_chunk=prefill_chunk, prefix_cache=prefix_cache)

    # ---- K/V between the cache and a snapshot (PagedEngine's hooks) ------------------------------------------------
    def _kv_bytes(self, n_tokens: int) -> int:
        return self._copier.nbytes(n_tokens)

    def _copy_in(self, seq: Sequence, n_kv: int, src: memoryview, src_tokens: int) -> None:
        self._copier.load(self._slots(seq, n_kv), src, src_tokens)

    def _copy_out(self, seq: Sequence, n_tokens: int, dst: memoryview) -> None:
        self._copier.save(self._slots(seq, n_tokens), dst)

    def _slots(self, seq: Sequence, n_tokens: int) -> list[int]:
        """Flat cache row of each of seq's first n_tokens tokens: page * page_size + offset in the page."""
        return [seq.block_table[t // self._page] * self._page + t % self._page for t in range(n_tokens)]

    # ---- the step ----------------------------------------------------------------------------------------------
    def step(self) -> list[TokenEvent]:
        self._table.begin_step()
        # Decodes claim their pages first (possibly preempting the youngest), then prompts run in what is left.
        decoding = [s for s in self._table.running() if s.pending == 1 and self._table.ensure_decode_block(s)]
        decoding = [s for s in decoding if self._table.is_running(s)]  # a later one may have preempted it
        sampled: list[tuple[Sequence, torch.Tensor]] = []  # (sequence, its next-token logits [vocab])
        budget = self._prefill_chunk
        for seq in [s for s in self._table.running() if s.pending > 1]:
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
        return self._table.emit(seqs, self._chooser.choose(seqs, torch.stack([row for _, row in sampled])))

    def _forward(self, seqs: list[Sequence], n: int, want_logits: bool) -> torch.Tensor | None:
        """Run each sequence's next n tokens (its K/V appended to its pages); logits [batch, vocab] if asked."""
        width = max(len(s.block_table) for s in seqs)
        # Padding entries name page 0 and are never read: flash-attn stops at each row's length.
        block_index = torch.tensor(
            [s.block_table + [0] * (width - len(s.block_table)) for s in seqs], dtype=torch.int32
        )  # [batch, pages]
        seqlens = torch.tensor([s.num_computed for s in seqs], dtype=torch.int32)  # [batch]
        input_ids = torch.tensor(
            [s.token_ids[s.num_computed : s.num_computed + n] for s in seqs], dtype=torch.long
        )  # [batch, n]
        logits = self._runtime.forward(input_ids, block_index, seqlens, want_logits)
        for seq in seqs:
            self._table.advance(seq, n)
        return logits
