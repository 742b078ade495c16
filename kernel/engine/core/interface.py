"""The engine interface: what the kernel may ask of any LLM engine (torch on the CPU, ExLlamaV2 on a GPU).

The kernel loop owns the engine and calls it from one thread only. The scheduler never touches tensors; the engine never
names shared-memory segments: the context manager (kernel/context/) joins the two through kv_nbytes/save_kv/load_kv.

Sequence model. A sequence is prompt_ids followed by output_ids. Its KV holds every token but the last sampled one,
which is the next step's input. A snapshot (save_kv) therefore records token_ids = prompt + output and the number of
tokens whose KV it carries; load_kv may be given a request whose tokens *extend* the snapshot's (agent context
retention, prefix reuse): the engine loads the KV it has and prefills only the rest.

Failure model. A sequence whose logits are not finite, or whose sampling fails, ends alone with
FinishReason.ERROR and a short TokenEvent.error; the other sequences of the batch step on unaffected. step() raising
means the whole batch failed (the forward itself), which the kernel treats as fatal for every running request.

Errors. EngineError (a request the engine cannot take), ContextLengthExceeded, NoCapacity and the context-length rule
(check_context_length) live in kernel/engine/errors.py, below core and structured both; they are re-exported here.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

# The errors live below core and structured alike; re-exported here, where the kernel looks for the engine's contract.
from kernel.engine.errors import ContextLengthExceeded, EngineError, NoCapacity, check_context_length

__all__ = [
    "MIN_TEMPERATURE",
    "Capacity",
    "ContextLengthExceeded",
    "Engine",
    "EngineError",
    "EngineRequest",
    "FinishReason",
    "KVLayout",
    "KVMeta",
    "NoCapacity",
    "SamplingParams",
    "TokenEvent",
    "check_context_length",
]

# Temperatures below this sample greedily: dividing logits by a smaller one overflows float32 to inf (and softmax of
# inf is NaN), and the distribution is already all but one-hot there (a logit gap of 0.01 becomes e^100).
MIN_TEMPERATURE = 1e-4


class FinishReason(str, enum.Enum):
    """Why a sequence ended. A str, so comparisons with the plain strings ("eos" == FinishReason.EOS) hold and it
    encodes as its value wherever a string goes."""

    EOS = "eos"  # the model produced an end-of-sequence token
    LENGTH = "length"  # max_tokens or the context length reached
    STOP = "stop"  # a stop string matched, or the request's grammar is complete
    ERROR = "error"  # this sequence failed numerically (non-finite logits, sampling failed): see TokenEvent.error

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 128
    temperature: float = 0.0  # 0 (or anything below MIN_TEMPERATURE) → greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 → off
    seed: int | None = None  # same seed → same output
    stop: tuple[str, ...] = ()  # stop strings (not included in the output)
    ignore_eos: bool = False  # benchmarks force an exact output length
    # Constrained decoding: a grammar spec (kernel/engine/structured/grammar.py builds them: json_schema_grammar,
    # lark_grammar,
    # regex_grammar). Every token is drawn from those the grammar allows next; the sequence ends with STOP once the
    # grammar is complete (nothing but end-of-sequence may follow). Compiled at add(): one that does not compile is
    # an EngineError there.
    grammar: str | None = None

    def validate(self) -> None:
        """Raise EngineError naming the first bad field."""
        if not isinstance(self.max_tokens, int) or self.max_tokens <= 0:
            raise EngineError(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        if not (0.0 <= float(self.temperature) <= 100.0):
            raise EngineError(f"temperature must be in [0, 100], got {self.temperature!r}")
        if not (0.0 < float(self.top_p) <= 1.0):
            raise EngineError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise EngineError(f"top_k must be a non-negative integer, got {self.top_k!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise EngineError("stop strings must be non-empty strings")
        if self.grammar is not None and (not isinstance(self.grammar, str) or not self.grammar.strip()):
            raise EngineError("grammar must be a non-empty string (a grammar spec) or None")


@dataclass
class EngineRequest:
    req_id: str
    prompt_ids: list[int]
    params: SamplingParams
    # Tokens already generated before this (re)admission: set when a preempted request resumes (from a snapshot or by
    # recompute). The engine continues after them and counts them against max_tokens. Their text counts as sent except
    # what the engine was still withholding (a possible stop string's start, an unfinished character): that comes out
    # with the next tokens' text.
    output_ids: list[int] = field(default_factory=list)
    # Sampler RNG state saved with a snapshot, so a seeded sampled run resumes identically. None → seed afresh.
    rng_state: bytes | None = None

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids


@dataclass(frozen=True)
class TokenEvent:
    req_id: str
    token_id: int  # -1 on a final event that carries no new token (e.g. stop string matched)
    text: str  # text delta this token adds (stop strings and partial UTF-8 withheld)
    finished: bool = False
    finish_reason: FinishReason | None = None
    error: str | None = None  # a short message when finish_reason is ERROR (never the prompt's text)


@dataclass(frozen=True)
class KVLayout:
    """A snapshot restores only into an engine of the same layout."""

    model_id: str
    n_layers: int
    n_kv_heads: int
    head_dim: int
    dtype: str  # "bfloat16" | "float32" | "float16"
    # False: the engine holds no KV the kernel can reach (a remote server's): kv_nbytes is 0, save_kv/load_kv refuse,
    # and the kernel preempts it by recompute (abort, then add with the output so far) and retains no contexts.
    snapshots: bool = True

    def bytes_per_token(self) -> int:
        itemsize = {"bfloat16": 2, "float16": 2, "float32": 4}[self.dtype]
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * itemsize  # K and V


@dataclass(frozen=True)
class Capacity:
    """How full the engine is, in the unit it allocates: KV blocks of block_size tokens. The scheduler's plan counts
    blocks (Engine.blocks_needed / blocks_held), so what it admits is what the engine will take."""

    free_blocks: int  # blocks an admission may take now (evictable cached prefixes count as free)
    total_blocks: int
    block_size: int  # tokens per block
    running: int  # sequences currently in the batch
    max_batch: int
    max_context: int  # longest sequence (prompt + output) the engine accepts

    @property
    def free_slots(self) -> int:
        return self.free_blocks * self.block_size

    @property
    def total_slots(self) -> int:
        return self.total_blocks * self.block_size

    @property
    def context_limit(self) -> int:
        """The longest sequence a request may grow to: the context, and never more than the whole KV pool."""
        return min(self.max_context, self.total_slots)


@dataclass(frozen=True)
class KVMeta:
    """What save_kv wrote: enough, with the bytes, to resume the sequence at its exact next token."""

    layout: KVLayout
    token_ids: tuple[int, ...]  # prompt + output so far
    prompt_len: int
    n_kv_tokens: int  # tokens whose K/V are in the bytes (normally len(token_ids) - 1)
    nbytes: int
    rng_state: bytes | None = None


class Engine(Protocol):
    def layout(self) -> KVLayout: ...
    def capacity(self) -> Capacity: ...
    def tokenize(self, text: str) -> list[int]: ...  # a raw prompt: the model's BOS first when its file asks for one
    def detokenize(self, ids: Sequence[int]) -> str: ...
    def apply_chat_template(self, messages: list[dict]) -> list[int]: ...
    def eos_token_ids(self) -> tuple[int, ...]: ...

    def blocks_needed(self, req: EngineRequest) -> int:
        """Free blocks add(req) would take now and its first decode would need: blocks for prompt + output + the next
        token, less the cached prefix blocks it would share with running sequences. Changes nothing."""

    def blocks_held(self, req_id: str) -> int:
        """Blocks that abort(req_id) would return to the free pool (those no other sequence shares)."""

    def add(self, req: EngineRequest) -> None:
        """Admit a request (validated here: EngineError on bad input, NoCapacity when it is valid but does not fit
        now, holding nothing). It runs from the next step() on."""

    def step(self) -> list[TokenEvent]:
        """One batched forward over every running sequence (prefill chunks and decodes together)."""

    def take_preempted(self) -> list[str]:
        """Ids of the sequences the engine preempted on its own since the last call (a decode found no free block and
        the youngest sequence gave its blocks up). Their KV is gone and the engine hands them over: it no longer
        steps or resumes them, and the caller re-admits each with add() (output_ids = the tokens so far) to resume by
        recompute, sampler state included. Until taken, the engine resumes them itself when blocks free up."""

    def has_work(self) -> bool: ...

    def abort(self, req_id: str) -> None:
        """Drop a request and free its KV slots. Unknown ids are ignored."""

    def kv_nbytes(self, req_id: str) -> int: ...

    def save_kv(self, req_id: str, dst: memoryview) -> KVMeta:
        """Copy one sequence's KV into dst (running, or finished in the last step(): valid until the next
        add/step/load_kv). Does not free it: the caller calls abort() after."""

    def load_kv(self, req: EngineRequest, meta: KVMeta, src: memoryview) -> None:
        """Admit req with the snapshot's KV loaded; meta.token_ids must be a prefix of req.token_ids. Tokens past the
        snapshot are prefilled by the following steps."""
