"""`kernel.metrics`: the accounting's counters and histograms and the kernel's gauges, as one msgpack-able dict for
the gateway's Prometheus endpoint (kernel/gateway/metrics.py). Needs proc.view, as kernel.top does.

Schema (version 1; fields are only ever added):

    version, uptime_s, model, scheduler
    kernel      {counters, histograms}          everything since the kernel started
    principals  [ {principal, counters, histograms} ]  ended agents included; at most MAX_LISTED, busiest first
    agents      [ {agent_id, name, principal, counters} ]  connected agents; at most MAX_LISTED, by agent id
    agents_total
    gauges      {agents, queue_length, requests_running, requests_waiting, requests_preempted, kv_blocks_used,
                 kv_blocks_total, snapshot_bytes_used, snapshot_bytes_total, tools_in_flight, approvals_pending,
                 tokens_per_s}
    early_tools {enabled (bool: the kernel starts read-only tool calls early), started, held, claimed, expired,
                 dropped, refused}  counters since the kernel started but held (a gauge); started == held + claimed +
                 expired + dropped + refused (kernel/services/early_start.py EarlyOutcome); all 0 when not enabled

counters:   {prompt_tokens, completion_tokens, calls, errors: {ErrorCode value: n}, preemptions, snapshot_bytes,
             tool_calls: {tool: n}, tool_errors}
histograms: {ttft_seconds, token_seconds, tool_call_seconds}, each {buckets: [upper bounds, s], cumulative: [count
             <= each bound, then the +Inf count], sum, count}. token_seconds holds one observation per finished call:
             its mean seconds per generated token after the first.

Histograms are given per principal and for the kernel, not per agent: per-agent buckets times hundreds of agents
would make every scrape large for little the principal's do not show. Cost: O(agents + principals listed).
"""

from __future__ import annotations

import time

from ipc.messages import MAX_LISTED
from kernel.observe.top import WAITING_STATES, arena, early_starts
from kernel.scheduler.base import ReqState
from kernel.services.early_start import EarlyOutcome


def metrics(syscalls, limit: int = MAX_LISTED) -> dict:
    llm, observe = syscalls.llm, syscalls.llm.observe
    accounting = observe.accounting
    observe.tools.drain(accounting)
    requests = list(llm.requests)
    running = sum(1 for r in requests if r.state is ReqState.RUNNING)
    preempted = sum(1 for r in requests if r.state is ReqState.PREEMPTED)
    waiting = sum(1 for r in requests if r.state in WAITING_STATES)
    capacity = llm.engine.capacity()
    arena_used, arena_total = arena(llm.context)
    principals = sorted(
        accounting.principals.items(), key=lambda kv: kv[1].prompt_tokens + kv[1].completion_tokens, reverse=True
    )[:limit]
    tools = syscalls.services.tools if syscalls.services is not None else None
    return {
        "version": 1,
        "uptime_s": round(time.monotonic() - observe.started, 3),
        "model": syscalls.model_id,
        "scheduler": llm.scheduler.name,
        "kernel": {"counters": accounting.kernel.counters(), "histograms": accounting.kernel.histograms()},
        "principals": [
            {"principal": name, "counters": usage.counters(), "histograms": usage.histograms()}
            for name, usage in principals
        ],
        "agents": [
            {
                "agent_id": account.agent_id,
                "name": account.name,
                "principal": account.principal,
                "counters": account.usage.counters(),
            }
            for account in list(accounting.agents.values())[:limit]
        ],
        "agents_total": len(accounting.agents),
        "gauges": {
            "agents": len(syscalls.agents),
            "queue_length": waiting,
            "requests_running": running,
            "requests_waiting": waiting - preempted,
            "requests_preempted": preempted,
            "kv_blocks_used": capacity.total_blocks - capacity.free_blocks,
            "kv_blocks_total": capacity.total_blocks,
            "snapshot_bytes_used": arena_used,
            "snapshot_bytes_total": arena_total,
            "tools_in_flight": len(observe.tools.in_flight),
            "approvals_pending": len(tools.held_calls()) if tools is not None else 0,
            "tokens_per_s": observe.rates.snapshot(llm.tokens_generated)["tokens_per_s"],
        },
        "early_tools": _early(syscalls),
    }


def _early(syscalls) -> dict:
    early = early_starts(syscalls)
    if early is None:
        return {"enabled": False, "started": 0, "held": 0, **{o.value: 0 for o in EarlyOutcome}}
    return {"enabled": True, **early.counts()}
