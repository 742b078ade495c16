"""A deterministic stand-in engine for testing the kernel loop without a model (never used by aiosd itself).

Tokens are bytes of UTF-8 text. Each step emits one token per running sequence: a lowercase letter chosen from the
sequence so far, so the output depends on the whole context, like a real model's, and is easy to recompute in a test.
KV "bytes" are the token ids themselves, so snapshots round-trip through the real context manager and arena.
"""
from __future__ import annotations

import time
from array import array
from dataclasses import dataclass, field

from kernel.engine.interface import (Capacity, EngineError, EngineRequest, KVLayout, KVMeta, TokenEvent)

LAYOUT = KVLayout(model_id="fake-bytes", n_layers=1, n_kv_heads=1, head_dim=1, dtype="float32")   # 8 bytes/token
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


@dataclass
class _Sequence:
    req: EngineRequest
    output_ids: list[int] = field(default_factory=list)

    @property
    def token_ids(self) -> list[int]:
        return self.req.prompt_ids + self.output_ids


class FakeEngine:
    def __init__(self, kv_budget_tokens: int = 4096, max_batch: int = 8):
        self.total_slots = kv_budget_tokens
        self.max_batch = max_batch
        self.running: dict[str, _Sequence] = {}
        self.just_finished: dict[str, _Sequence] = {}      # savable until the next step, like the real engine
        self.steps = 0
        self.stalled = False       # a test sets this to keep sequences running without progress


    def layout(self) -> KVLayout:
        return LAYOUT

    def capacity(self) -> Capacity:
        used = sum(len(s.token_ids) for s in self.running.values())
        return Capacity(free_slots=self.total_slots - used, total_slots=self.total_slots, running=len(self.running),
                        max_batch=self.max_batch, max_context=self.total_slots)

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
        if len(req.token_ids) + 1 > self.capacity().free_slots or len(self.running) >= self.max_batch:
            raise EngineError("no room")
        self.running[req.req_id] = _Sequence(req, list(req.output_ids))

    def step(self) -> list[TokenEvent]:
        self.steps += 1
        self.just_finished.clear()
        if self.stalled:
            time.sleep(0.001)      # stand in for a forward pass, so a stalled kernel does not spin a core
            return []
        events = []
        for req_id, seq in list(self.running.items()):
            token = next_token(seq.token_ids)
            seq.output_ids.append(token)
            done = len(seq.output_ids) >= seq.req.params.max_tokens
            events.append(TokenEvent(req_id, token, chr(token), finished=done, finish_reason="length" if done else None))
            if done:
                self.just_finished[req_id] = self.running.pop(req_id)
        return events

    def has_work(self) -> bool:
        return bool(self.running)

    def abort(self, req_id: str) -> None:
        self.running.pop(req_id, None)
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
        kv = array("q", seq.token_ids[:-1]).tobytes()        # [n_kv_tokens] int64 = 8 bytes per token
        dst[:len(kv)] = kv
        return KVMeta(layout=LAYOUT, token_ids=tuple(seq.token_ids), prompt_len=len(seq.req.prompt_ids),
                      n_kv_tokens=len(seq.token_ids) - 1, nbytes=len(kv))

    def load_kv(self, req: EngineRequest, meta: KVMeta, src: memoryview) -> None:
        if list(array("q", bytes(src[:meta.nbytes]))) != list(meta.token_ids[:meta.n_kv_tokens]):
            raise EngineError("snapshot bytes do not match its token ids")
        self.add(req)
