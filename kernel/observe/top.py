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
                              minute_left (int | None: tokens the bucket holds now), total_left (int | None)}} ]
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
