"""A deterministic stand-in engine for testing the kernel loop without a model (never used by aiosd itself).

Tokens are bytes of UTF-8 text. Each step emits one token per running sequence: a lowercase letter chosen from the
sequence so far, so the output depends on the whole context, like a real model's, and is easy to recompute in a test.
KV "bytes" are the token ids themselves, so snapshots round-trip through the real context manager and arena.

KV is allocated like the real engine's: in blocks of block_size tokens, enough at admission for the tokens so far, one
more when a decode crosses a block boundary. A decode that finds no free block preempts the youngest sequence (maybe
itself) and reports it through take_preempted(); a valid admission that does not fit raises NoCapacity. There is no
prefix cache: blocks_needed is the whole request's, rounded up.
"""

from __future__ import annotations

import time
from array import array
from dataclasses import dataclass, field

from kernel.engine.core.interface import Capacity, EngineError, EngineRequest, KVLayout, KVMeta, NoCapacity, TokenEvent

LAYOUT = KVLayout(model_id="fake-bytes", n_layers=1, n_kv_heads=1, head_dim=1, dtype="float32")  # 8 bytes/token
EOS = 0


def next_token(token_ids: list[int]) -> int:
    return ord("a") + sum(token_ids) % 26


def expected_output(prompt: str, max_tokens: int) -> str:
    """What the fake engine answers to a raw prompt."""
    ids = list(prompt.encode())
    out = []
    for _ in range(max_tokens):
        out.append(next_token(ids + out))
    return bytes(out).decode()


def blocks_for(n_tokens: int, block_size: int) -> int:
    return -(-n_tokens // block_size)


@dataclass
class _Sequence:
    req: EngineRequest
    output_ids: list[int] = field(default_factory=list)
    blocks: int = 0

    @property
    def token_ids(self) -> list[int]:
        return self.req.prompt_ids + self.output_ids


class FakeEngine:
    def __init__(self, kv_budget_tokens: int = 4096, max_batch: int = 8, block_size: int = 16):
        self.block_size = block_size
        self.total_blocks = kv_budget_tokens // block_size
        self.max_batch = max_batch
        self.running: dict[str, _Sequence] = {}  # in admission order: the last is the youngest
        self.just_finished: dict[str, _Sequence] = {}  # savable until the next step, like the real engine
        self.preempted: list[str] = []  # preempted by a decode, not yet taken
        self.preemptions = 0  # engine-side preemptions so far
        self.refusals = 0  # admissions refused with NoCapacity
        self.refuse_next = 0  # a test sets this to refuse that many admissions as if out of blocks
        self.steps = 0
        self.stalled = False  # a test sets this to keep sequences running without progress

    def layout(self) -> KVLayout:
        return LAYOUT

    def _free_blocks(self) -> int:
        return self.total_blocks - sum(s.blocks for s in (*self.running.values(), *self.just_finished.values()))

    def capacity(self) -> Capacity:
        return Capacity(
            free_blocks=self._free_blocks(),
            total_blocks=self.total_blocks,
            block_size=self.block_size,
            running=len(self.running),
            max_batch=self.max_batch,
            max_context=self.total_blocks * self.block_size,
        )

    def blocks_needed(self, req: EngineRequest) -> int:
        return blocks_for(len(req.token_ids) + 1, self.block_size)

    def blocks_held(self, req_id: str) -> int:
        return self._sequence(req_id).blocks

    def take_preempted(self) -> list[str]:
        taken, self.preempted = self.preempted, []
        return taken

    def tokenize(self, text: str) -> list[int]:
        return list(text.encode())

    def detokenize(self, ids) -> str:
        return bytes(ids).decode(errors="replace")

    def apply_chat_template(self, messages: list[dict]) -> list[int]:
        return self.tokenize("".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>")

    def eos_token_ids(self) -> tuple[int, ...]:
        return (EOS,)

    def add(self, req: EngineRequest) -> None:
        req.params.validate()
        if req.req_id in self.running:
            raise EngineError(f"request {req.req_id} already running")
        if req.req_id in self.preempted:
            raise EngineError(f"request {req.req_id} was preempted and not taken yet")
        blocks = blocks_for(len(req.token_ids), self.block_size)
        if blocks > self._free_blocks() or len(self.running) >= self.max_batch or self.refuse_next:
            self.refusals += 1
            self.refuse_next = max(0, self.refuse_next - 1)
            raise NoCapacity(f"no room: {blocks} blocks needed, {self._free_blocks()} free")
        self.running[req.req_id] = _Sequence(req, list(req.output_ids), blocks)

    def step(self) -> list[TokenEvent]:
        self.steps += 1
        self.just_finished.clear()
        if self.stalled:
            time.sleep(0.001)  # stand in for a forward pass, so a stalled kernel does not spin a core
            return []
        events = []
        for req_id, seq in list(self.running.items()):
            if req_id not in self.running or not self._decode_block(seq):
                continue  # preempted to give an older sequence its block
            token = next_token(seq.token_ids)
            seq.output_ids.append(token)
            done = len(seq.output_ids) >= seq.req.params.max_tokens
            events.append(
                TokenEvent(req_id, token, chr(token), finished=done, finish_reason="length" if done else None)
            )
            if done:
                self.just_finished[req_id] = self.running.pop(req_id)
        return events

    def _decode_block(self, seq: _Sequence) -> bool:
        """A block for the KV of seq's last token, preempting the youngest sequences while none is free, as the
        real engine does. False if seq itself had to go."""
        while seq.blocks * self.block_size < len(seq.token_ids):
            if self._free_blocks() > 0:
                seq.blocks += 1
                continue
            victim = next(reversed(self.running))
            del self.running[victim]
            self.preempted.append(victim)
            self.preemptions += 1
            if victim == seq.req.req_id:
                return False
        return True

    def has_work(self) -> bool:
        return bool(self.running)

    def abort(self, req_id: str) -> None:
        self.running.pop(req_id, None)
        if req_id in self.preempted:
            self.preempted.remove(req_id)
        self.just_finished.pop(req_id, None)

    def _sequence(self, req_id: str) -> _Sequence:
        seq = self.running.get(req_id) or self.just_finished.get(req_id)
        if seq is None:
            raise EngineError(f"unknown request {req_id}")
        return seq

    def kv_nbytes(self, req_id: str) -> int:
        return (len(self._sequence(req_id).token_ids) - 1) * LAYOUT.bytes_per_token()

    def save_kv(self, req_id: str, dst: memoryview) -> KVMeta:
        seq = self._sequence(req_id)
        kv = array("q", seq.token_ids[:-1]).tobytes()  # [n_kv_tokens] int64 = 8 bytes per token
        dst[: len(kv)] = kv
        return KVMeta(
            layout=LAYOUT,
            token_ids=tuple(seq.token_ids),
            prompt_len=len(seq.req.prompt_ids),
            n_kv_tokens=len(seq.token_ids) - 1,
            nbytes=len(kv),
        )

    def load_kv(self, req: EngineRequest, meta: KVMeta, src: memoryview) -> None:
        if list(array("q", bytes(src[: meta.nbytes]))) != list(meta.token_ids[: meta.n_kv_tokens]):
            raise EngineError("snapshot bytes do not match its token ids")
        self.add(req)
