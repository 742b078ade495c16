"""Checks that a run's records account for its trace: every call answered exactly once, with the exact output length."""

from __future__ import annotations

from collections import Counter

from bench.records import AgentRecord, RequestRecord
from bench.trace import Trace


def problems(trace: Trace, requests: list[RequestRecord], agents: list[AgentRecord]) -> list[str]:
    """Every inconsistency found, as readable sentences; empty when the run is sound."""
    found: list[str] = []
    expected = {(a.agent_id, i): call.max_tokens for a in trace.agents for i, call in enumerate(a.calls)}
    seen = Counter((r.agent_id, r.call) for r in requests)
    for key in sorted(expected.keys() - seen.keys()):
        found.append(f"call {key[1]} of {key[0]} has no record")
    for key, count in sorted(seen.items()):
        if key not in expected:
            found.append(f"record for call {key[1]} of {key[0]}, which the trace does not have")
        elif count != 1:
            found.append(f"call {key[1]} of {key[0]} answered {count} times")
    for req in requests:
        if req.error is not None:
            found.append(f"call {req.call} of {req.agent_id} failed: {req.error}")
        elif req.completion_tokens != expected.get((req.agent_id, req.call), req.completion_tokens):
            found.append(
                f"call {req.call} of {req.agent_id} generated {req.completion_tokens} tokens, "
                f"asked for {expected[(req.agent_id, req.call)]}"
            )
        elif req.first_token is None or not req.submitted <= req.first_token <= req.finished:
            found.append(f"call {req.call} of {req.agent_id} has times out of order")
    agent_counts = Counter(a.agent_id for a in agents)
    for program in trace.agents:
        if agent_counts[program.agent_id] != 1:
            found.append(f"agent {program.agent_id} reported {agent_counts[program.agent_id]} times")
    return found
