"""`kernel.top`: one snapshot of everything an operator watches, built on the kernel loop's thread in one pass.

Who may call it: a holder of proc.view (the operator's admin token; the gateway's /ui and `aios top` present it).
Anyone else is refused `permission_denied` (audited), as proc.list would not show them other principals' agents.

The reply body is KernelTop(snapshot=<dict>), the dict msgpack-able (str keys; str, int, float, bool, None, lists and
dicts of those). Lists are bounded: at most `limit` agents and `limit` requests (the call's `limit`, at most
MAX_LISTED = 500), each with its total beside it, so a page can say "showing 500 of 2,000". Seconds are floats,
tokens and bytes ints. Schema (version 1; fields are only ever added):

    version        1
    time           wall-clock Unix seconds when the snapshot was taken
    uptime_s       seconds since the kernel started
    model          model id the engine serves
    scheduler      scheduling policy name (fifo, rr, las, plas, ...)
    steps          engine steps so far (the scheduler's clock)
    agents_total   connected agents
    agents         [ {agent_id, name, principal, pid (int | None), priority,
                      state: "running" | "waiting" | "tool" | "idle"   (running: a call in the batch; waiting: calls
                             queued or preempted only; tool: a tool call in flight and no LLM call; idle: nothing),
                      requests (LLM calls in flight), prompt_tokens, completion_tokens (served across its calls so far),
                      calls (LLM calls finished), errors (LLM calls ended by an error),
                      quota: {tokens_per_minute (int | None: no limit), tokens_total (int | None),
                              minute_left (int | None: tokens the bucket holds now), total_left (int | None),
                              used (tokens charged so far), kept (bool: a quota the agent asked for, kept under its
                              principal and name: it continued what an earlier connection spent and outlives this
                              one; kernel/observe/quota_book.py)},
                      early_held (tool runs started early, held for its tool.call)} ]
                   the agents with calls in flight first, then by agent id (arrival)
    principals     [ {principal, agents (connected now), prompt_tokens, completion_tokens, calls, errors} ]
                   totals since the kernel started, ended agents included
    requests_total LLM calls in flight
    requests       [ {request_id ("<agent id>/<client id>"), agent_id, state: "waiting" | "running" | "preempted",
                      priority (effective: agent's + the call's hint), prompt_tokens, generated_tokens, max_tokens,
                      waiting_s (seconds queued before its first admission: so far for a waiting call), age_s} ]
                   in arrival order
    queue          request ids waiting or preempted, in the order the scheduler last planned to admit them where it
                   named them, then the rest in arrival order
    queue_order    "scheduler" when the order above came from a plan, else "arrival"
    kv             {blocks_used, blocks_total, block_size, running (sequences in the batch), max_batch, max_context}
    arena          {bytes_used, bytes_total, snapshots, retained_contexts}
    tools          [ {agent_id, tool, running_s} ]  tool calls in flight (approved or not needing approval)
    early_total    tool runs started early and held now, waiting for the agent's tool.call (kernel/services/
                   early_start.py); 0 in a kernel without early starts
    early          [ {early_id, agent_id, tool, state: "running" | "finished", started (wall-clock Unix seconds),
                      age_s} ]  those runs, the oldest first (each leaves when claimed, at its TTL or its agent's end)
    approvals      [ {approval_id, agent_id, agent_name, tool, arguments (a bounded one-line summary), waiting_s} ]
    spaces         {memory: [ {space, entries, bytes} ], files: [ {space, bytes, files} ],
                    age_s (float | None: how old these counts are; None before the first count came in)}
                   from the memory and storage services' own counters, refreshed in the background every few
                   seconds (never a directory walk on the loop); at most MAX_LISTED of each, largest first
    rates          {tokens_per_s (generated, over the last window_s), window_s, ttft_p50_s (float | None: median time to
                    first token of the calls that finished in the window), queue_length (calls waiting or preempted)}

It must not stall the loop: it touches each agent and request once (O(agents + requests)), never the engine's blocks
per request, never the disk.
"""

from __future__ import annotations

import time

from ipc.messages import MAX_LISTED
from kernel.scheduler.base import ReqState

WAITING_STATES = (ReqState.WAITING, ReqState.PREEMPTED)


def snapshot(syscalls, steps: int, limit: int = MAX_LISTED) -> dict:
    """The kernel.top dict for the kernel behind `syscalls` (kernel/daemon/dispatch.py Syscalls), built on the loop."""
    llm, observe = syscalls.llm, syscalls.llm.observe
    limit = max(1, min(limit, MAX_LISTED))
    now = time.monotonic()
    observe.tools.drain(observe.accounting)
    requests = list(llm.requests)
    per_agent: dict[str, list[int]] = {}  # agent id -> [calls in flight, running, waiting]
    for request in requests:
        counts = per_agent.setdefault(request.agent_id, [0, 0, 0])
        counts[0] += 1
        counts[1] += request.state is ReqState.RUNNING
        counts[2] += request.state in WAITING_STATES
    on_tools = {agent_id for agent_id, _, _ in observe.tools.in_flight.values()}
    capacity = llm.engine.capacity()
    waiting = [r.req_id for r in requests if r.state in WAITING_STATES]
    waiting_ids, planned_ids = set(waiting), set(llm.planned)
    planned = [req_id for req_id in llm.planned if req_id in waiting_ids]
    queue = planned + [req_id for req_id in waiting if req_id not in planned_ids]
    arena_used, arena_total = arena(llm.context)
    early = early_starts(syscalls)
    early_by_agent = early.held_by() if early is not None else {}
    return {
        "version": 1,
        "time": time.time(),
        "uptime_s": round(now - observe.started, 3),
        "model": syscalls.model_id,
        "scheduler": llm.scheduler.name,
        "steps": steps,
        "agents_total": len(syscalls.agents),
        "agents": _agents(syscalls, per_agent, on_tools, early_by_agent, limit),
        "principals": _principals(syscalls, limit),
        "requests_total": len(requests),
        "requests": [_request(syscalls, r, now) for r in requests[:limit]],
        "queue": queue[:limit],
        "queue_order": "scheduler" if planned else "arrival",
        "kv": {
            "blocks_used": capacity.total_blocks - capacity.free_blocks,
            "blocks_total": capacity.total_blocks,
            "block_size": capacity.block_size,
            "running": capacity.running,
            "max_batch": capacity.max_batch,
            "max_context": capacity.max_context,
        },
        "arena": {
            "bytes_used": arena_used,
            "bytes_total": arena_total,
            **_arena_counts(llm.context),
        },
        "tools": [
            {"agent_id": agent_id, "tool": tool, "running_s": round(now - since, 3)}
            for agent_id, tool, since in list(observe.tools.in_flight.values())[:limit]
        ],
        "early_total": sum(early_by_agent.values()),
        "early": early.held(limit) if early is not None else [],
        "approvals": _approvals(syscalls, limit),
        "spaces": observe.spaces.snapshot(),
        "rates": {**observe.rates.snapshot(llm.tokens_generated), "queue_length": len(waiting)},
    }


def _agents(syscalls, per_agent: dict, on_tools: set, early_by_agent: dict, limit: int) -> list[dict]:
    accounts = syscalls.llm.accounting.agents
    agents = list(syscalls.agents)
    busy = [a for a in agents if a.agent_id in per_agent]
    chosen = (busy + [a for a in agents if a.agent_id not in per_agent])[:limit]
    rows = []
    for agent in chosen:
        in_flight, running, waiting = per_agent.get(agent.agent_id, (0, 0, 0))
        account = accounts.get(agent.agent_id)
        usage = account.usage if account is not None else None
        state = "running" if running else "waiting" if waiting else "tool" if agent.agent_id in on_tools else "idle"
        rows.append(
            {
                "agent_id": agent.agent_id,
                "name": agent.name,
                "principal": agent.principal,
                "pid": agent.pid,
                "priority": agent.priority,
                "state": state,
                "requests": in_flight,
                "prompt_tokens": usage.prompt_tokens if usage else 0,
                "completion_tokens": usage.completion_tokens if usage else 0,
                "calls": usage.calls if usage else 0,
                "errors": usage.error_count if usage else 0,
                "quota": agent.quota.left(),
                "early_held": early_by_agent.get(agent.agent_id, 0),
            }
        )
    return rows


def _principals(syscalls, limit: int) -> list[dict]:
    accounting = syscalls.llm.accounting
    connected: dict[str, int] = {}
    for agent in syscalls.agents:
        connected[agent.principal] = connected.get(agent.principal, 0) + 1
    rows = [
        {
            "principal": principal,
            "agents": connected.get(principal, 0),
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "calls": usage.calls,
            "errors": usage.error_count,
        }
        for principal, usage in accounting.principals.items()
    ]
    rows.sort(key=lambda r: r["prompt_tokens"] + r["completion_tokens"], reverse=True)
    return rows[:limit]


def _request(syscalls, request, now: float) -> dict:
    agent = syscalls.agents.get(request.agent_id)
    queued_until = request.admitted_time if request.admitted_time is not None else now
    return {
        "request_id": request.req_id,
        "agent_id": request.agent_id,
        "state": request.state.value,
        "priority": request.priority(agent.priority if agent is not None else 0),
        "prompt_tokens": request.prompt_tokens,
        "generated_tokens": len(request.output_ids),
        "max_tokens": request.engine_request.params.max_tokens,
        "waiting_s": round(max(0.0, queued_until - request.arrival_time), 3),
        "age_s": round(max(0.0, now - request.arrival_time), 3),
    }


def _approvals(syscalls, limit: int) -> list[dict]:
    tools = syscalls.services.tools if syscalls.services is not None else None
    if tools is None:
        return []
    return [
        {
            "approval_id": p.approval_id,
            "agent_id": p.agent_id,
            "agent_name": p.agent_name,
            "tool": p.tool,
            "arguments": p.arguments,
            "waiting_s": p.waiting_s,
        }
        for p in tools.held_calls()[:limit]
    ]


def early_starts(syscalls):
    """The tool service's EarlyStarts, or None (no services, no tool service, or early starts off)."""
    tools = syscalls.services.tools if syscalls.services is not None else None
    return getattr(tools, "early", None)


def arena(context) -> tuple[int, int]:
    usage = getattr(context, "arena_usage", None)
    return usage() if usage is not None else (0, 0)


def _arena_counts(context) -> dict:
    counts = getattr(context, "record_counts", None)
    return counts() if counts is not None else {"snapshots": 0, "retained_contexts": 0}
