"""Agentic mixes replayed on a model of the kernel: schedulers (fifo / las / plas) x retention (off / lru / tool-aware).

    python -m bench.agentic [--seeds 0 1 2] [--arena-mb 256] [--out results.json]

This is a replay against a cost model, not a run of aiosd: the real policies decide (kernel/scheduler's plan(), the
retention policies' victims() and should_retain()), and the engine and the agents are reduced to what the choices
cost. It exists because a real run of 9 configurations x 3 mixes x several seeds takes hours on 2 cores; the real run
of the same mixes (aiosd with its tool manager and retention policies, and llama.cpp's server) is bench/agentic_live.py.

The model, per kernel step: every running call decodes one token; the step lasts the measured decode step of that
batch size (bench/RESULTS.md's batch_scaling table, SmolLM2-135M bfloat16 on 2 cores) plus the prefill of the prompt
tokens admitted in it (0.46 ms per token, the suite's calibrated cost). A call's prompt is the agent's whole history;
what it must prefill is that less the KV it finds: its retained context (retention lru / tool-aware, whole history up
to its last output) or, without one, the shared system prompt from the engine's prefix cache (retention off drops
both, as the suite's fifo-drop). Retained contexts live in an arena of --arena-mb at 23 KB per token (the model's KV
in bfloat16); a preempted call's KV is assumed restored at no cost, and the arena copies of retained contexts
(about 7 ms per 2k tokens at 7 GB/s) are not charged. A call's tool runs for the trace's seconds after it
finishes; the agent's next call arrives then. Agent completion = last call's end - first call's arrival.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass, field

from bench.metrics import percentile
from bench.trace import Trace
from bench.workloads import generate
from kernel.context.retention import Kind, Resident, RetentionPolicy
from kernel.context.tool_retention import ToolAwareRetention
from kernel.engine.core.interface import Capacity
from kernel.scheduler import transitions
from kernel.scheduler.base import ReqState, RequestView
from kernel.scheduler.registry import make_scheduler

STEP_S = {1: 0.0321, 2: 0.0370, 4: 0.0394, 8: 0.0429, 12: 0.0493, 16: 0.0574}  # decode step by batch (RESULTS.md)
PREFILL_S_PER_TOKEN = 0.00046
BYTES_PER_TOKEN = 23 * 1024
BLOCK, KV_BUDGET_TOKENS, MAX_BATCH = 16, 16384, 8
SCHEDULERS, RETENTIONS = ("fifo", "las", "plas"), ("off", "lru", "tool-aware")
MIXES = ("agentic", "agentic_heavy_tailed", "agentic_interactive")


def step_seconds(batch: int) -> float:
    sizes = sorted(STEP_S)
    low = max(s for s in sizes if s <= batch)
    high = min((s for s in sizes if s >= batch), default=sizes[-1])
    if low == high:
        return STEP_S[low]
    return STEP_S[low] + (STEP_S[high] - STEP_S[low]) * (batch - low) / (high - low)


@dataclass
class SimCall:
    req_id: str
    agent_id: str
    index: int
    prompt: int
    max_tokens: int
    arrival_step: int
    program_arrival: int
    priority: int
    state: ReqState = ReqState.WAITING
    output: int = 0
    slice_tokens: int = 0
    waiting_since: int = 0


@dataclass
class Replay:
    trace: Trace
    scheduler: str
    retention: str
    arena_bytes: int
    max_batch: int = MAX_BATCH
    clock: float = 0.0
    step: int = 0
    calls: dict[str, SimCall] = field(default_factory=dict)
    service: dict[str, int] = field(default_factory=dict)
    history: dict[str, int] = field(default_factory=dict)  # agent -> tokens of its conversation so far
    retained: dict[str, tuple[int, int]] = field(default_factory=dict)  # agent -> (tokens, last_used)
    pending: list[tuple[float, str, int]] = field(default_factory=list)  # (time, agent, call index) to submit
    done_at: dict[str, float] = field(default_factory=dict)
    prefilled: int = 0
    reused: int = 0

    def __post_init__(self):
        self.policy = make_scheduler(self.scheduler)
        self.keep = (
            None
            if self.retention == "off"
            else RetentionPolicy()
            if self.retention == "lru"
            else ToolAwareRetention(clock=lambda: self.clock)
        )
        self.programs = {a.agent_id: a for a in self.trace.agents}
        self.prefix = {p: len(text.split()) for p, text in self.trace.prefixes.items()}
        self.first_step: dict[str, int] = {}
        for a in self.trace.agents:
            self.history[a.agent_id] = self.prefix.get(a.prefix, 0) if a.prefix else 0
            self.pending.append((a.arrival_s, a.agent_id, 0))

    # -- arrivals and endings ----------------------------------------------------------------------------------------

    def _submit_due(self) -> None:
        due = [p for p in self.pending if p[0] <= self.clock]
        self.pending = [p for p in self.pending if p[0] > self.clock]
        for _, agent_id, index in sorted(due):
            program = self.programs[agent_id]
            if index > 0 and self.keep is not None:
                self.keep.tool_finished(agent_id, program.calls[index - 1].tool_after.kind)
            call = program.calls[index]
            self.history[agent_id] += call.text_tokens
            self.first_step.setdefault(agent_id, self.step)
            req = SimCall(
                f"{agent_id}/{index}",
                agent_id,
                index,
                self.history[agent_id],
                call.max_tokens,
                self.step,
                self.first_step[agent_id],
                program.priority,
                waiting_since=self.step,
            )
            self.calls[req.req_id] = req

    def _finish(self, req: SimCall) -> None:
        req.state = ReqState.DONE
        del self.calls[req.req_id]
        program = self.programs[req.agent_id]
        self.history[req.agent_id] += req.output
        if self.keep is not None:
            self._retain(req.agent_id, self.history[req.agent_id])
        if req.index + 1 == len(program.calls):
            self.done_at[req.agent_id] = self.clock
            return
        gap = program.calls[req.index].tool_after
        if self.keep is not None:
            self.keep.tool_started(req.agent_id, gap.kind)
        self.pending.append((self.clock + gap.seconds, req.agent_id, req.index + 1))

    def _retain(self, agent_id: str, tokens: int) -> None:
        self.retained.pop(agent_id, None)
        size = tokens * BYTES_PER_TOKEN
        if not self.keep.should_retain(size, self.arena_bytes):
            return
        residents = [Resident(a, Kind.RETAINED, t * BYTES_PER_TOKEN, used) for a, (t, used) in self.retained.items()]
        used = sum(r.nbytes for r in residents)
        for victim in self.keep.victims(residents):
            if used + size <= self.arena_bytes:
                break
            del self.retained[victim.key]
            used -= victim.nbytes
        if used + size <= self.arena_bytes:
            self.retained[agent_id] = (tokens, self.step)

    # -- the loop ----------------------------------------------------------------------------------------------------

    def _view(self, req: SimCall) -> RequestView:
        # reserved whole at admission: the engine never preempts on its own here
        blocks = -(-(req.prompt + req.max_tokens + 1) // BLOCK)
        return RequestView(
            req_id=req.req_id,
            agent_id=req.agent_id,
            state=req.state,
            priority=req.priority,
            arrival=req.arrival_step,
            prompt_tokens=req.prompt,
            max_tokens=req.max_tokens,
            output_tokens=req.output,
            slice_tokens=req.slice_tokens,
            waiting_since=req.waiting_since,
            agent_service=self.service.get(req.agent_id, 0),
            kv_blocks=blocks,
            program_arrival=req.program_arrival,
        )

    def run(self) -> dict[str, float]:
        while self.pending or self.calls:
            self._submit_due()
            running = [c for c in self.calls.values() if c.state is ReqState.RUNNING]
            waiting = [c for c in self.calls.values() if c.state in (ReqState.WAITING, ReqState.PREEMPTED)]
            if not running and not waiting:
                self.clock = min(p[0] for p in self.pending)
                continue
            used_blocks = sum(self._view(c).blocks for c in running)
            capacity = Capacity(
                free_blocks=KV_BUDGET_TOKENS // BLOCK - used_blocks,
                total_blocks=KV_BUDGET_TOKENS // BLOCK,
                block_size=BLOCK,
                running=len(running),
                max_batch=self.max_batch,
                max_context=KV_BUDGET_TOKENS,
            )
            plan = self.policy.plan(
                [self._view(c) for c in running], [self._view(c) for c in waiting], capacity, self.step
            )
            prefill = 0
            for req_id in plan.preempt:
                transitions.preempt(self.calls[req_id], self.step)
            for req_id in plan.admit:
                req = self.calls[req_id]
                if req.state is ReqState.WAITING:
                    prefill += self._admit(req)
                transitions.start(req)
            batch = [c for c in self.calls.values() if c.state is ReqState.RUNNING]
            self.clock += prefill * PREFILL_S_PER_TOKEN + (step_seconds(len(batch)) if batch else 0.0)
            for req in batch:
                req.output += 1
                req.slice_tokens += 1
                self.service[req.agent_id] = self.service.get(req.agent_id, 0) + 1
                if req.output >= req.max_tokens:
                    self._finish(req)
            self.step += 1
        return {a.agent_id: self.done_at[a.agent_id] - a.arrival_s for a in self.trace.agents}

    def _admit(self, req: SimCall) -> int:
        """Prompt tokens the admission prefills, after what retention or the prefix cache holds."""
        self.service[req.agent_id] = self.service.get(req.agent_id, 0) + req.prompt
        found = self.retained.pop(req.agent_id, None)
        if self.keep is not None:
            self.keep.call_started(req.agent_id)
        if found is not None:
            have = found[0]
        elif self.keep is not None and self.programs[req.agent_id].prefix:
            have = self.prefix[self.programs[req.agent_id].prefix]
        else:
            have = 0
        self.reused += have
        self.prefilled += req.prompt - have
        return req.prompt - have


def one(mix: str, seed: int, scheduler: str, retention: str, arena_mb: int, max_batch: int = MAX_BATCH) -> dict:
    replay = Replay(generate(mix, seed), scheduler, retention, arena_mb << 20, max_batch)
    completion = list(replay.run().values())
    return {
        "mean": statistics.fmean(completion),
        "p99": percentile(completion, 99),
        "prefilled_tokens": replay.prefilled,
        "reused_tokens": replay.reused,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arena-mb", type=int, default=256)
    parser.add_argument("--max-batch", type=int, default=MAX_BATCH, help="the engine's batch cap (aiosd --max-batch)")
    parser.add_argument("--out", default=None, help="write every run's numbers as JSON here")
    args = parser.parse_args(argv)
    results: dict = {}
    for mix in MIXES:
        for scheduler in SCHEDULERS:
            for retention in RETENTIONS:
                runs = [one(mix, seed, scheduler, retention, args.arena_mb, args.max_batch) for seed in args.seeds]
                results[f"{mix}/{scheduler}/{retention}"] = {
                    key: statistics.median(r[key] for r in runs) for key in runs[0]
                } | {"runs": runs}
    print(
        f"median over seeds {args.seeds}; agent completion in model seconds; arena {args.arena_mb} MiB; "
        f"max batch {args.max_batch}"
    )
    print("| mix | scheduler | retention | mean | p99 | prefilled tokens | reused tokens |")
    print("|---|---|---|---|---|---|---|")
    for key, r in results.items():
        print(
            f"| {' | '.join(key.split('/'))} | {r['mean']:.2f} | {r['p99']:.2f} | {r['prefilled_tokens']:.0f} | "
            f"{r['reused_tokens']:.0f} |"
        )
    ratios = (
        ("fifo/plas (lru)", ("fifo", "lru"), ("plas", "lru")),
        ("fifo/las (lru)", ("fifo", "lru"), ("las", "lru")),
        ("off/tool-aware (fifo)", ("fifo", "off"), ("fifo", "tool-aware")),
        ("lru/tool-aware (fifo)", ("fifo", "lru"), ("fifo", "tool-aware")),
    )
    print("\n| mix | " + " | ".join(f"{name}, mean / p99" for name, _, _ in ratios) + " |")
    print("|---|" + "---|" * len(ratios))
    for mix in MIXES:
        cells = []
        for _, (s1, r1), (s2, r2) in ratios:
            a, b = results[f"{mix}/{s1}/{r1}"], results[f"{mix}/{s2}/{r2}"]
            cells.append(f"{a['mean'] / b['mean']:.2f} / {a['p99'] / b['p99']:.2f}")
        print(f"| {mix} | " + " | ".join(cells) + " |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
