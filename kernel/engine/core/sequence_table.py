"""The sequences an engine holds and the KV blocks they own: the bookkeeping both engines share.

A sequence is running (in the batch), preempted (lost its blocks to another's decode; its tokens are kept and it is
recomputed when blocks free up) or finished in the last step (its KV stays until the next step or admission, so save_kv
can still copy it). The table admits requests (validated, sharing cached prefix blocks), gives decodes their next block
(preempting the youngest sequence when the pool is exhausted), registers full blocks for prefix sharing, turns sampled
tokens into events and frees blocks. It never touches K/V tensors: the engine runs the model over the blocks the table
hands out, and tells it how many tokens it ran (advance).

Capacity has one owner: the caller's scheduler. capacity() and blocks_needed()/blocks_held() report it in the blocks
the table really allocates, admissions it cannot take raise NoCapacity (holding nothing), and the sequences it preempts
itself are handed over by take_preempted() for the caller to re-admit when its plan says so. A table whose preempted
sequences are never taken (used alone) resumes them itself, oldest first.

Constrained requests (params.grammar) get a Constraint at admission, rebuilt from their output ids when they resume
(constraint.py); the engine's TokenChooser masks their logits rows before sampling; emit() advances them with the
sampled token and ends them with STOP when their grammar is complete. Rows without a grammar take no part in any of it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from collections.abc import Sequence as Seq

from kernel.engine.core.block_pool import ROOT_LINK, BlockPool
from kernel.engine.core.interface import (
    Capacity,
    EngineError,
    EngineRequest,
    FinishReason,
    KVMeta,
    NoCapacity,
    SamplingParams,
    TokenEvent,
    check_context_length,
)
from kernel.engine.core.sampler import SamplingError, generator_state, new_generator
from kernel.engine.core.sequence import Sequence
from kernel.engine.core.text_stream import TextStream
from kernel.engine.structured.constraint import Constraint
from kernel.engine.structured.grammar import GrammarCompiler


class SequenceTable:
    def __init__(
        self,
        pool: BlockPool,
        max_batch: int,
        model_max_context: int,
        vocab_size: int,
        eos_ids: tuple[int, ...],
        decode: Callable[[Seq[int]], str],
        grammars: GrammarCompiler | None = None,
    ):
        self.pool = pool
        self.block_size = pool.block_size
        self.max_batch = max_batch
        self.max_context = min(model_max_context, pool.n_blocks * pool.block_size)
        self.eos_ids = eos_ids
        self._vocab_size = vocab_size
        self._decode = decode
        self._running: dict[str, Sequence] = {}  # in admission order: prompt budget goes to the oldest first
        self._preempted: dict[str, Sequence] = {}  # oldest first: resumed in that order
        self._finished: dict[str, Sequence] = {}
        # Preempted sequences handed over to the caller (take_preempted): the sampler state each resumes with.
        self._handed_over: dict[str, bytes] = {}
        self._admissions = itertools.count()
        self._grammars = grammars  # None: this engine refuses constrained requests

    # ---- queries -------------------------------------------------------------------------------------------------
    def capacity(self) -> Capacity:
        return Capacity(
            free_blocks=self.pool.num_available(),
            total_blocks=self.pool.n_blocks,
            block_size=self.block_size,
            running=len(self._running) + len(self._preempted),
            max_batch=self.max_batch,
            max_context=self.max_context,
        )

    def blocks_needed(self, req: EngineRequest) -> int:
        """Free blocks admit(req) would take, plus its first decode's: prompt + output + the next token, rounded up
        to blocks, less the cached prefix blocks it would share. A cached block nobody references is counted: taking
        it out of the cache uses up a free block just as a fresh one does. The prefix is matched the way admit()
        matches it and released at once; that marks the waiting request's cached prefix as recently used, which only
        keeps it from being the first evicted."""
        tokens = req.token_ids
        whole = -(-(len(tokens) + 1) // self.block_size)
        available = self.pool.num_available()
        cached, _ = self.pool.match_prefix(tokens, len(tokens) - 1)
        revived = available - self.pool.num_available()
        self.pool.release(cached)
        return whole - len(cached) + revived

    def blocks_held(self, req_id: str) -> int:
        """Blocks that abort(req_id) would return to the pool: those of its blocks no other sequence holds."""
        seq = self.lookup(req_id)
        shared = {
            block
            for other in (*self._running.values(), *self._finished.values())
            if other is not seq
            for block in other.block_table
        }
        return sum(1 for block in seq.block_table if block not in shared)

    def take_preempted(self) -> list[str]:
        """Hand the sequences this table preempted over to the caller, oldest first: they hold no blocks, are no
        longer resumed here, and resume identically when the caller admits them again (their tokens come with the
        request, their sampler state is kept here until then)."""
        taken = list(self._preempted)
        for req_id, seq in self._preempted.items():
            self._handed_over[req_id] = generator_state(seq.generator)
        self._preempted.clear()
        return taken

    def has_work(self) -> bool:
        return bool(self._running or self._preempted)

    def request_ids(self) -> list[str]:
        """Every request holding KV: running, waiting to recompute, or finished in the last step."""
        return [*self._running, *self._preempted, *self._finished]

    def running(self) -> list[Sequence]:
        """The running sequences, oldest first."""
        return list(self._running.values())

    def is_running(self, seq: Sequence) -> bool:
        return seq.req_id in self._running

    def lookup(self, req_id: str) -> Sequence:
        seq = self._running.get(req_id) or self._finished.get(req_id) or self._preempted.get(req_id)
        if seq is None:
            raise EngineError(f"unknown request id {req_id!r}")
        return seq

    def check_ids(self, ids: Seq[int]) -> None:
        if any(not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < self._vocab_size for t in ids):
            raise EngineError(f"token ids must be integers in [0, {self._vocab_size})")

    # ---- admission -----------------------------------------------------------------------------------------------
    def admit(self, req: EngineRequest) -> None:
        """Start req, sharing the cached blocks that hold its longest prefix (they need no prefill)."""
        seq = self._new_sequence(req, req.rng_state if req.rng_state is not None else self._handed_over.get(req.req_id))
        self._allocate(seq, reuse_prefix=True)
        self._handed_over.pop(seq.req_id, None)
        self._running[seq.req_id] = seq

    def admit_snapshot(self, req: EngineRequest, meta: KVMeta, copy_in: Callable[[Sequence, int], None]) -> None:
        """Start req with K/V from a (checked) snapshot: copy_in(seq, n) writes the snapshot's first n tokens' K/V
        into seq's blocks."""
        seq = self._new_sequence(req, req.rng_state if req.rng_state is not None else meta.rng_state)
        self._allocate(seq, reuse_prefix=False)
        # At least the last token is recomputed, so the next step has logits to sample from.
        n_kv = min(meta.n_kv_tokens, len(seq.token_ids) - 1)
        copy_in(seq, n_kv)
        self.advance(seq, n_kv)
        self._handed_over.pop(seq.req_id, None)
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
        self.check_ids(tokens)
        # The context rule's invariant: room for the next token. The kernel admits only requests whose whole
        # max_tokens fits (interface.check_context_length), so through it this never fires; and a sequence that
        # reaches the context ends with LENGTH (_append).
        check_context_length(len(tokens), 1, self.max_context)
        if len(req.output_ids) >= req.params.max_tokens:
            raise EngineError(f"request already produced {len(req.output_ids)} of max_tokens={req.params.max_tokens}")
        if len(self._running) + len(self._preempted) >= self.max_batch:
            raise NoCapacity(f"batch full ({self.max_batch} sequences)")
        constraint = self._constraint(req)
        return Sequence(
            req.req_id,
            req.params,
            tokens,
            len(req.prompt_ids),
            new_generator(req.params.seed, rng_state),
            TextStream(self._decode, req.params.stop, req.output_ids),
            next(self._admissions),
            constraint=constraint,
        )

    def _constraint(self, req: EngineRequest) -> Constraint | None:
        """req's grammar compiled (or found in the cache) and replayed over its output so far."""
        if req.params.grammar is None:
            return None
        if self._grammars is None:
            raise EngineError("this engine does not support grammar-constrained requests")
        return Constraint.start(self._grammars, req.params.grammar, req.output_ids)

    def _allocate(self, seq: Sequence, reuse_prefix: bool) -> None:
        """Give seq blocks for all its tokens: cached blocks holding its prefix (if reuse_prefix), then fresh ones.
        Raises NoCapacity, holding nothing, if the pool is short."""
        cached, link = [], ROOT_LINK
        if reuse_prefix:
            # The last token is left out so at least one token runs, giving logits to sample from.
            cached, link = self.pool.match_prefix(seq.token_ids, len(seq.token_ids) - 1)
        needed = -(-len(seq.token_ids) // self.block_size) - len(cached)
        if needed > self.pool.num_available():
            self.pool.release(cached)
            raise NoCapacity(
                f"not enough free KV slots: {needed * self.block_size} needed, "
                f"{self.pool.num_available() * self.block_size} free"
            )
        seq.block_table = cached + self.pool.allocate(needed)
        seq.num_registered, seq.prefix_link = len(cached), link
        seq.num_computed = len(cached) * self.block_size

    # ---- the step ------------------------------------------------------------------------------------------------
    def begin_step(self) -> None:
        """Free what finished in the last step, then resume preempted sequences (oldest first) while blocks allow."""
        self._drop_finished()
        for seq in list(self._preempted.values()):
            try:
                self._allocate(seq, reuse_prefix=True)
            except NoCapacity:
                return  # the younger ones wait behind it
            self._running[seq.req_id] = self._preempted.pop(seq.req_id)

    def ensure_decode_block(self, seq: Sequence) -> bool:
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

    def advance(self, seq: Sequence, n_tokens: int) -> None:
        """Record that seq's next n_tokens tokens now have K/V, and register each block they filled (under its prefix,
        tokens checked on every hit) for later requests to share."""
        seq.num_computed += n_tokens
        bs = self.block_size
        for index in range(seq.num_registered, seq.num_computed // bs):
            if seq.prefix_link is None:
                break
            seq.prefix_link = self.pool.register(
                seq.block_table[index], seq.prefix_link, seq.token_ids[index * bs : (index + 1) * bs]
            )
        seq.num_registered = max(seq.num_registered, seq.num_computed // bs)

    def emit(self, seqs: list[Sequence], tokens: list[int | SamplingError]) -> list[TokenEvent]:
        """Append each sequence's next token (token_choice.py chose them from the step's logits) and turn it into an
        event. A sequence whose row could not be sampled (a SamplingError in its place) ends alone with
        FinishReason.ERROR."""
        return [
            self._fail(seq, str(token)) if isinstance(token, SamplingError) else self._append(seq, token)
            for seq, token in zip(seqs, tokens)
        ]

    def _append(self, seq: Sequence, token: int) -> TokenEvent:
        seq.token_ids.append(token)
        if token in self.eos_ids and not seq.params.ignore_eos:
            return self._finish(seq, token, seq.stream.flush(), FinishReason.EOS)
        if seq.constraint is not None and not seq.constraint.advance(token):
            return self._fail(seq, f"sampled token {token} breaks the grammar: {seq.constraint.error}")
        text, stopped = seq.stream.push(token)
        if stopped:
            return self._finish(seq, -1, text, FinishReason.STOP)
        if seq.constraint is not None and seq.constraint.complete:
            return self._finish(seq, token, text + seq.stream.flush(), FinishReason.STOP)
        if seq.num_output >= seq.params.max_tokens or len(seq.token_ids) >= self.max_context:
            return self._finish(seq, token, text + seq.stream.flush(), FinishReason.LENGTH)
        return TokenEvent(seq.req_id, token, text)

    def _fail(self, seq: Sequence, message: str) -> TokenEvent:
        """End seq with no new token. Its blocks leave the prefix cache: K/V that produced non-finite logits may be
        non-finite itself, and must not be served to the next request with this prefix."""
        self.pool.forget_unshared(seq.block_table)
        return self._finish(seq, -1, seq.stream.flush(), FinishReason.ERROR, message)

    def _finish(
        self, seq: Sequence, token: int, text: str, reason: FinishReason, error: str | None = None
    ) -> TokenEvent:
        self._finished[seq.req_id] = self._running.pop(seq.req_id)
        return TokenEvent(seq.req_id, token, text, finished=True, finish_reason=reason, error=error)

    # ---- removal -------------------------------------------------------------------------------------------------
    def abort(self, req_id: str) -> None:
        self._handed_over.pop(req_id, None)
        for table in (self._running, self._preempted, self._finished):
            seq = table.pop(req_id, None)
            if seq is not None:
                self._free(seq)

    def _preempt(self, seq: Sequence) -> None:
        del self._running[seq.req_id]
        self._free(seq)
        seq.num_computed = seq.num_registered = 0
        self._preempted[seq.req_id] = seq

    def _free(self, seq: Sequence) -> None:
        self.pool.release(seq.block_table)
        seq.block_table = []

    def _drop_finished(self) -> None:
        for seq in self._finished.values():
            self._free(seq)
        self._finished.clear()
