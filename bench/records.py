"""What an agent runner reports: one record per LLM call and one per agent, as JSON lines.

Times are seconds since the run's common start (the harness hands every runner the same wall-clock origin), so
records written by different processes compare directly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path


@dataclass(frozen=True)
class RequestRecord:
    agent_id: str
    kind: str
    priority: int
    call: int  # index of the call in the agent's program
    submitted: float
    first_token: float | None  # None when the call failed before any token
    finished: float
    prompt_tokens: int
    completion_tokens: int
    max_tokens: int  # requested (exact, with ignore_eos) output length
    queue_wait: float  # seconds before the request was first served (kernel timing, or a free CPU slot)
    error: str | None = None

    @property
    def latency(self) -> float:
        return self.finished - self.submitted

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.submitted


@dataclass(frozen=True)
class AgentRecord:
    agent_id: str
    kind: str
    priority: int
    arrival: float  # scheduled arrival from the trace
    finished: float
    tool_seconds: float  # time spent in tool gaps, measured
    load_seconds: float  # model load time (no-kernel baseline only; 0 with a kernel)
    n_calls: int
    error: str | None = None

    @property
    def completion(self) -> float:
        return self.finished - self.arrival


def write_record(path: Path, record: RequestRecord | AgentRecord) -> None:
    """Append one JSON line (a line per write, so a crashed runner leaves whole records behind)."""
    line = json.dumps({"type": type(record).__name__, **asdict(record)})
    with open(path, "a") as out:
        out.write(line + "\n")


def read_records(paths: list[Path]) -> tuple[list[RequestRecord], list[AgentRecord]]:
    requests: list[RequestRecord] = []
    agents: list[AgentRecord] = []
    kinds = {"RequestRecord": (RequestRecord, requests), "AgentRecord": (AgentRecord, agents)}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            data = json.loads(line)
            cls, bucket = kinds[data.pop("type")]
            bucket.append(cls(**{f.name: data[f.name] for f in fields(cls)}))
    return requests, agents
