"""Every syscall and reply of the AIOS protocol, defined once.

A frame is one msgpack map: {"v": PROTOCOL_VERSION, "id": <client-chosen request id>, "type": <name>, "body": {...}}.
Agent → kernel frames carry a syscall name as type; kernel → agent frames carry "token" (stream events of an LLM call,
zero or more), then exactly one "result" or "error". Notifications (NOTIFICATIONS) get no reply at all.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

PROTOCOL_VERSION = 1


# ---- syscalls (agent → kernel) -------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Hello:
    name: str
    priority: int = 0
    pid: int | None = None          # the agent's OS process, watched so its requests die with it
    host: str | None = None         # pid is only meaningful on the kernel's own host


@dataclass(frozen=True, kw_only=True)
class Heartbeat:
    """Sent while waiting on a long call: an agent silent for longer than the kernel's lease is reaped."""


@dataclass(frozen=True, kw_only=True)
class LLMCall:
    max_tokens: int = 128
    temperature: float = 0.0        # 0 → greedy
    top_p: float = 1.0
    top_k: int = 0                  # 0 → off
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False            # send "token" frames as text is generated
    priority: int = 0               # hint added to the agent's priority; higher runs first
    ignore_eos: bool = False        # generate exactly max_tokens (benchmarks)
    predicted_tokens: int | None = None   # expected output length, for shortest-job-first


@dataclass(frozen=True, kw_only=True)
class Generate(LLMCall):
    prompt: str                     # raw completion, no chat template


@dataclass(frozen=True, kw_only=True)
class ChatMessage:
    role: Literal["system", "user", "assistant", "tool"]
    content: str


@dataclass(frozen=True, kw_only=True)
class Chat(LLMCall):
    messages: list[ChatMessage]


@dataclass(frozen=True, kw_only=True)
class Cancel:
    request_id: int | str           # an in-flight LLM call of the same agent


@dataclass(frozen=True, kw_only=True)
class ProcList:
    pass


@dataclass(frozen=True, kw_only=True)
class ProcKill:
    agent_id: str


@dataclass(frozen=True, kw_only=True)
class SetPriority:
    agent_id: str
    priority: int


@dataclass(frozen=True, kw_only=True)
class Stats:
    pass


@dataclass(frozen=True, kw_only=True)
class Ping:
    pass


# ---- results (kernel → agent, body of a "result" frame) -------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class HelloResult:
    agent_id: str
    model: str
    scheduler: str
    protocol: int = PROTOCOL_VERSION


@dataclass(frozen=True, kw_only=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, kw_only=True)
class Timing:
    """Seconds, measured in the kernel from the syscall's arrival."""
    queue_s: float                  # until first admitted to the engine
    ttft_s: float | None            # until the first token (None if none was generated)
    total_s: float                  # until the final reply


@dataclass(frozen=True, kw_only=True)
class Completion:
    text: str
    finish_reason: str              # "eos" | "length" | "stop"
    usage: Usage
    timing: Timing


@dataclass(frozen=True, kw_only=True)
class RequestInfo:
    request_id: int | str
    state: Literal["waiting", "running", "preempted", "done"]
    priority: int
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True, kw_only=True)
class AgentInfo:
    agent_id: str
    name: str
    pid: int | None
    priority: int
    service_tokens: int             # prompt + output tokens served to the agent across its calls
    requests: list[RequestInfo] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class ProcTable:
    agents: list[AgentInfo]


@dataclass(frozen=True, kw_only=True)
class KernelStats:
    values: dict                    # engine capacity, scheduler, counts, context manager stats: flat name → number/str


@dataclass(frozen=True, kw_only=True)
class Ack:
    pass


# ---- other kernel → agent frames ------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Token:
    text: str                       # text delta (may be empty while a multi-byte character or stop string is pending)
    token_id: int


@dataclass(frozen=True, kw_only=True)
class Error:
    code: str                       # an ipc.errors.ErrorCode value
    message: str


# syscall name → (body type, result type)
SYSCALLS: dict[str, tuple[type, type]] = {
    "hello": (Hello, HelloResult),
    "llm.generate": (Generate, Completion),
    "llm.chat": (Chat, Completion),
    "llm.cancel": (Cancel, Ack),
    "proc.list": (ProcList, ProcTable),
    "proc.kill": (ProcKill, Ack),
    "proc.set_priority": (SetPriority, Ack),
    "kernel.stats": (Stats, KernelStats),
    "kernel.ping": (Ping, Ack),
}
# one-way messages: no reply, no request id needed
NOTIFICATIONS: dict[str, type] = {"agent.heartbeat": Heartbeat}
# frame types the kernel sends
REPLY_TOKEN, REPLY_RESULT, REPLY_ERROR = "token", "result", "error"
