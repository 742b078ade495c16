"""The bodies of the AIOS protocol's syscalls and replies (those of the services: service_messages.py); which
syscalls exist, with which body, result and rights, is the syscall table's (ipc/syscalls.py).

A frame is one msgpack map: {"v": PROTOCOL_VERSION, "id": <client-chosen request id>, "type": <name>, "body": {...}}.
Agent → kernel frames carry a syscall name as type; kernel → agent frames carry "token" (stream events of an LLM call,
zero or more), then exactly one "result" or "error". Notifications (NOTIFICATIONS) get no reply at all.

Every value an agent sends is bounded here (bounded(): range, length, charset, count) and checked when decoded, so
nothing out of range reaches a handler, the scheduler or the engine: priorities are nice-like, PRIORITY_MIN..MAX
(higher runs first; an agent's priority plus a call's hint is clamped to the same range), a temperature below the
engine's floor is greedy, a stop list holds at most MAX_STOP_STRINGS strings of at most MAX_STOP_CHARS characters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

from ipc.schema import bounded

PROTOCOL_VERSION = 1

PRIORITY_MIN, PRIORITY_MAX = -20, 20
DEFAULT_PRIORITY = 0  # above it needs the proc.renice capability (kernel/daemon/dispatch.py)
MAX_NAME_CHARS = 64  # agent names: printable
MAX_ID_CHARS = 64  # request and agent ids
MAX_TOKENS_LIMIT = 1 << 20  # far past any context window; the engine refuses what its context cannot hold
MAX_STOP_STRINGS, MAX_STOP_CHARS = 16, 128
MAX_MESSAGES = 4096  # chat messages per call (their text is bounded by the frame size)
MAX_SECRET_CHARS = 256  # admin and grant tokens
MAX_CAPABILITIES = 16
MAX_TOOLS = 64  # tools offered to the model in one chat call
MAX_QUOTA_TOKENS = 1 << 50
MAX_LISTED = 500  # agents and requests one kernel.top lists


# ---- syscalls (agent → kernel) -------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Hello:
    """Who the agent is comes from its connection (the peer's uid and pid on ipc://, its Curve key on tcp://), never
    from this body; the body only names the agent and may present a token for capabilities (admin or a grant)."""

    name: str = bounded(max_len=MAX_NAME_CHARS, printable=True)
    priority: int = bounded(DEFAULT_PRIORITY, lo=PRIORITY_MIN, hi=PRIORITY_MAX)
    token: str | None = bounded(None, max_len=MAX_SECRET_CHARS)
    ephemeral: bool = False  # memory and files in a throwaway space, dropped when the agent ends
    # token quotas the agent asks for itself: only ever lower than the kernel's (aiosd --quota-*), never higher
    tokens_per_minute: int | None = bounded(None, lo=1, hi=MAX_QUOTA_TOKENS)
    max_tokens_total: int | None = bounded(None, lo=1, hi=MAX_QUOTA_TOKENS)


@dataclass(frozen=True, kw_only=True)
class Heartbeat:
    """Sent while waiting on a long call: an agent silent for longer than the kernel's lease is reaped."""


@dataclass(frozen=True, kw_only=True)
class LLMCall:
    max_tokens: int = bounded(128, lo=1, hi=MAX_TOKENS_LIMIT)
    temperature: float = bounded(0.0, lo=0.0, hi=100.0)  # 0 (or below the engine's floor) → greedy
    top_p: float = bounded(1.0, lo=1e-6, hi=1.0)
    top_k: int = bounded(0, lo=0, hi=MAX_TOKENS_LIMIT)  # 0 → off
    seed: int | None = bounded(None, lo=0, hi=(1 << 63) - 1)
    stop: tuple[str, ...] = bounded((), max_len=MAX_STOP_CHARS, max_items=MAX_STOP_STRINGS)
    stream: bool = False  # send "token" frames as text is generated
    priority: int = bounded(0, lo=PRIORITY_MIN - PRIORITY_MAX, hi=PRIORITY_MAX - PRIORITY_MIN)  # hint added to the
    # agent's priority (the sum clamped to PRIORITY_MIN..MAX); higher runs first
    ignore_eos: bool = False  # generate exactly max_tokens (benchmarks)
    predicted_tokens: int | None = bounded(None, lo=1, hi=MAX_TOKENS_LIMIT)  # expected output length, for sjf


@dataclass(frozen=True, kw_only=True)
class Generate(LLMCall):
    prompt: str  # raw completion, no chat template


@dataclass(frozen=True, kw_only=True)
class ChatMessage:
    role: Literal["system", "user", "assistant", "tool"]
    content: str  # "" for an assistant turn that only made tool calls
    # an assistant turn's calls, OpenAI-shaped: [{"id", "type": "function", "function": {"name", "arguments"}}]
    tool_calls: list[dict] = bounded(factory=list, max_items=16)
    tool_call_id: str | None = bounded(None, max_len=64)  # a tool message: the call it answers


class ResponseFormatType(str, Enum):
    TEXT = "text"
    JSON_OBJECT = "json_object"  # any JSON object
    JSON_SCHEMA = "json_schema"  # a JSON document valid against schema


@dataclass(frozen=True, kw_only=True)
class ResponseFormat:
    """What the answer's text must be (OpenAI's response_format, flattened): enforced by the constrained decoder, so
    the text parses and validates (unless cut short at max_tokens). A schema's size is bounded by the frame's."""

    type: Literal["text", "json_object", "json_schema"]
    schema: dict | None = None  # json_schema only: the JSON schema
    name: str = bounded("response", max_len=MAX_NAME_CHARS)
    strict: bool = True


@dataclass(frozen=True, kw_only=True)
class Chat(LLMCall):
    messages: list[ChatMessage] = bounded(max_items=MAX_MESSAGES)
    # OpenAI-shaped: [{"type": "function", "function": {"name", "description", "parameters": <JSON schema>}}]
    tools: list[dict] = bounded(factory=list, max_items=MAX_TOOLS)
    # "auto" (text or a call), "required" (a call), "none", or {"type": "function", "function": {"name": ...}}
    tool_choice: str | dict = "auto"
    parallel_tool_calls: bool = False  # the model may make several calls in one answer (where its format allows)
    response_format: ResponseFormat | None = None  # the text answer's shape (tool calls keep theirs)
    early_tools: bool = True  # the kernel may start a read-only tool as the model writes its call (held for tool.call)


@dataclass(frozen=True, kw_only=True)
class Cancel:
    request_id: int | str = bounded(lo=0, hi=(1 << 63) - 1, max_len=MAX_ID_CHARS)  # an in-flight call of this agent


@dataclass(frozen=True, kw_only=True)
class ProcList:
    pass


@dataclass(frozen=True, kw_only=True)
class ProcKill:
    agent_id: str = bounded(max_len=MAX_ID_CHARS)


@dataclass(frozen=True, kw_only=True)
class SetPriority:
    agent_id: str = bounded(max_len=MAX_ID_CHARS)
    priority: int = bounded(lo=PRIORITY_MIN, hi=PRIORITY_MAX)


@dataclass(frozen=True, kw_only=True)
class Grant:
    """Mint a token carrying capabilities (a subset of the caller's own), for an agent to present at hello
    (`aios run --grant CAP ...`)."""

    capabilities: list[str] = bounded(max_items=MAX_CAPABILITIES, max_len=32)


@dataclass(frozen=True, kw_only=True)
class Stats:
    pass


@dataclass(frozen=True, kw_only=True)
class Top:
    """kernel.top: the operator's snapshot (kernel/observe/top.py); needs proc.view."""

    limit: int = bounded(MAX_LISTED, lo=1, hi=MAX_LISTED)  # agents and requests listed (totals are always given)


@dataclass(frozen=True, kw_only=True)
class Metrics:
    """kernel.metrics: the accounting's counters and histograms (kernel/observe/metrics.py); needs proc.view."""


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
class GrantResult:
    token: str


@dataclass(frozen=True, kw_only=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, kw_only=True)
class Timing:
    """Seconds, measured in the kernel from the syscall's arrival."""

    queue_s: float  # until first admitted to the engine
    ttft_s: float | None  # until the first token (None if none was generated)
    total_s: float  # until the final reply


@dataclass(frozen=True, kw_only=True)
class ToolCall:
    """A call the model made: arguments is a JSON object text that parses and validates against the tool's schema."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, kw_only=True)
class Completion:
    text: str  # without the tool calls' markup when there are tool_calls
    finish_reason: str  # "eos" | "length" | "stop" | "tool_calls"
    usage: Usage
    timing: Timing
    tool_calls: list[ToolCall] = field(default_factory=list)


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
    service_tokens: int  # prompt + output tokens served to the agent across its calls
    requests: list[RequestInfo] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class ProcTable:
    agents: list[AgentInfo]


@dataclass(frozen=True, kw_only=True)
class KernelStats:
    values: dict  # engine capacity, scheduler, counts, context manager stats: flat name → number/str


@dataclass(frozen=True, kw_only=True)
class KernelTop:
    snapshot: dict  # schema: kernel/observe/top.py


@dataclass(frozen=True, kw_only=True)
class KernelMetrics:
    metrics: dict  # schema: kernel/observe/metrics.py


@dataclass(frozen=True, kw_only=True)
class Ack:
    pass


# ---- other kernel → agent frames ------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Token:
    text: str  # text delta (may be empty while a multi-byte character or stop string is pending)
    token_id: int


@dataclass(frozen=True, kw_only=True)
class Error:
    code: str  # an ipc.errors.ErrorCode value
    message: str


# one-way messages: no reply, no request id needed
NOTIFICATIONS: dict[str, type] = {"agent.heartbeat": Heartbeat}
# frame types the kernel sends
REPLY_TOKEN, REPLY_RESULT, REPLY_ERROR = "token", "result", "error"
