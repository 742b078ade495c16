"""The syscalls an agent makes, written once for both clients: sdk.Kernel (sync) and sdk.AsyncKernel (asyncio).

Each method builds its Request (sdk/protocol.py) and hands it to the client's `_run`, which sends it and returns the
result: a value on Kernel, an awaitable on AsyncKernel (so `k.ps()` there is `await k.ps()`). Only streaming and the
connection itself differ between the two clients and live in their own modules.
"""

from __future__ import annotations

import itertools
import os
import sys
from typing import Any

from ipc.address import check_address, default_address
from ipc.messages import MAX_LISTED, Grant, Metrics, Ping, ProcKill, ProcList, SetPriority, Stats, Top
from ipc.service_messages import Share
from sdk.protocol import TOKEN_ENV, Request, chat_body, generate_body, hello_body
from sdk.services import Files, Memory, Tools


class Syscalls:
    """chat, generate, ps, kill, renice, stats, ping, top, metrics, share, grant; the memory, fs and tools services."""

    def _init_agent(
        self,
        address: str | None,
        name: str | None,
        priority: int,
        timeout: float | None,
        token: str | None,
        ephemeral: bool,
        tokens_per_minute: int | None = None,
        max_tokens_total: int | None = None,
    ) -> None:
        """Who this client is to the kernel, and its services; the same for both clients."""
        self.address = check_address(address or default_address())
        self.name = name or os.path.basename(sys.argv[0] or "agent") or "agent"
        self.priority = priority
        self.ephemeral = ephemeral
        self.quotas = {"tokens_per_minute": tokens_per_minute, "max_tokens_total": max_tokens_total}
        self.timeout = timeout  # default per-call timeout, seconds (None: wait forever)
        self._token = token or os.environ.get(TOKEN_ENV) or None
        self._ids = itertools.count(1)
        self.memory = Memory(self._run)  # k.memory.add(...), k.memory.search(...)
        self.fs = Files(self._run)  # k.fs.write(...), k.fs.read(...)
        self.tools = Tools(self._run)  # k.tools.list(), k.tools.call(name, {...})

    def _hello_request(self) -> Request:
        body = hello_body(self.name, self.priority, self._token, self.ephemeral, **self.quotas)
        return Request("hello", body)

    def _run(self, request: Request, timeout: float | None = None) -> Any:
        raise NotImplementedError

    # -- LLM syscalls ----------------------------------------------------------------------------------------------

    def chat(self, messages: list[dict], *, full: bool = False, timeout: float | None = None, **options):
        """The assistant's reply to a conversation ([{"role": ..., "content": ...}, ...]). Options: max_tokens,
        temperature (0 = greedy), top_p, top_k, seed, stop, priority, ignore_eos, predicted_tokens, tools (OpenAI-
        shaped, e.g. k.tools.as_openai()) and tool_choice ("auto", "required", "none" or {"type": "function",
        "function": {"name": ...}}): the calls the model makes are in the Completion's tool_calls (full=True), their
        arguments always valid JSON for the tool's schema.
        full=True returns a Completion with usage and kernel-side timing."""
        return self._run(Request("llm.chat", chat_body(messages, options), None if full else _text), timeout)

    def generate(self, prompt: str, *, full: bool = False, timeout: float | None = None, **options):
        """Raw completion of prompt (no chat template); same options as chat()."""
        return self._run(Request("llm.generate", generate_body(prompt, options), None if full else _text), timeout)

    # -- process and kernel syscalls ---------------------------------------------------------------------------------

    def ps(self):
        """Agents and their requests (list[AgentInfo]): this agent's own, or every agent's with proc.view."""
        return self._run(Request("proc.list", ProcList(), _agents))

    def kill(self, agent_id: str):
        return self._run(Request("proc.kill", ProcKill(agent_id=agent_id), _none))

    def renice(self, agent_id: str, priority: int):
        return self._run(Request("proc.set_priority", SetPriority(agent_id=agent_id, priority=priority), _none))

    def stats(self):
        """dict[str, Any]: engine capacity, scheduler, counts, context manager stats."""
        return self._run(Request("kernel.stats", Stats(), _values))

    def ping(self):
        return self._run(Request("kernel.ping", Ping(), _none))

    def top(self, limit: int = MAX_LISTED):
        """dict: the operator's snapshot (schema: kernel/observe/top.py) — agents, requests, queue, KV, tools,
        approvals, spaces, rates; at most limit agents and requests listed. Needs proc.view (an operator token)."""
        return self._run(Request("kernel.top", Top(limit=limit), lambda reply: reply.snapshot))

    def metrics(self):
        """dict: the kernel's accounting, counters and histograms (kernel/observe/metrics.py). Needs proc.view."""
        return self._run(Request("kernel.metrics", Metrics(), lambda reply: reply.metrics))

    def share(self, kind: str, grantee: str, mode: str = "r", prefix: str = ""):
        """Let grantee (an agent name of this user, or "<principal>/<name>") read ("r") or read and write ("rw") this
        agent's memory (kind "mem") or files under prefix (kind "fs"); mode "none" revokes."""
        return self._run(Request("access.share", Share(kind=kind, grantee=grantee, mode=mode, prefix=prefix), _none))

    def grant(self, capabilities: list[str]):
        """A token (str) carrying capabilities this agent holds, for another agent to present (needs access.grant)."""
        return self._run(Request("access.grant", Grant(capabilities=list(capabilities)), _token))


def _text(completion):
    return completion.text


def _agents(table):
    return table.agents


def _values(stats):
    return stats.values


def _token(result):
    return result.token


def _none(_ack):
    return None
