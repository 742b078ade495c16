"""Agent programs on the scheduler simulator: calls one after another, each submitted a tool gap after the previous
one finished, as the kernel sees an agent that calls the model, runs a tool, and calls again.

A program's completion is the step its last call finished minus the step its first call arrived, as the bench measures
agent completion. The mixes are seeded draws: heavy-tailed program lengths (Pareto number of calls, as agent traces
show: most programs make a few calls, a few make dozens) and a light-tailed one (every program the same size).
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

from kernel.scheduler.base import Scheduler
from tests.scheduler.simulator import SimRequest, Simulation


@dataclass(frozen=True)
class Program:
    agent_id: str
    arrival: int
    calls: tuple[tuple[int, int], ...]  # (prompt tokens, output tokens) of each call
    gaps: tuple[int, ...]  # tool steps after each call but the last

    @property
    def tokens(self) -> int:
        return sum(p + o for p, o in self.calls)


def heavy_tailed(
    rng: random.Random, n: int = 40, span: int = 1200, alpha: float = 1.1, most_calls: int = 40
) -> list[Program]:
    """n programs arriving uniformly over span steps; calls ~ Pareto(alpha) (1 call at least, most_calls at most)."""
    return [_program(rng, i, span, min(most_calls, int(rng.paretovariate(alpha)))) for i in range(n)]


def light_tailed(rng: random.Random, n: int = 40, span: int = 1200, calls: int = 3) -> list[Program]:
    """n programs of the same number of calls: nothing for program-level ranking to exploit."""
    return [_program(rng, i, span, calls) for i in range(n)]


def _program(rng: random.Random, index: int, span: int, n_calls: int) -> Program:
    calls = tuple((rng.randint(4, 24), rng.randint(12, 40)) for _ in range(n_calls))
    gaps = tuple(rng.randint(0, 30) for _ in range(n_calls - 1))
    return Program(f"p{index:03d}", rng.randint(0, span), calls, gaps)


def run_programs(
    scheduler: Scheduler, programs: list[Program], max_batch: int, total_slots: int = 1 << 20, limit: int = 200_000
) -> tuple[dict[str, int], Simulation]:
    """Run every program to its end; returns each one's completion (steps) and the simulation."""
    sim = Simulation(scheduler, max_batch=max_batch, total_slots=total_slots)
    by_id = {p.agent_id: p for p in programs}
    for p in programs:
        prompt, output = p.calls[0]
        sim.submit(
            SimRequest(f"{p.agent_id}/0", p.agent_id, arrival=p.arrival, max_tokens=output, prompt_tokens=prompt)
        )
    finished: set[str] = set()
    completion: dict[str, int] = {}
    while len(completion) < len(programs):
        assert sim.now < limit, "programs did not finish"
        sim.step()
        for req in list(sim.requests.values()):
            if req.finished_at is None or req.req_id in finished:
                continue
            finished.add(req.req_id)
            agent_id, index = req.agent_id, int(req.req_id.rsplit("/", 1)[1])
            p = by_id[agent_id]
            if index + 1 == len(p.calls):
                completion[agent_id] = req.finished_at + 1 - p.arrival
                continue
            prompt, output = p.calls[index + 1]
            # Next call after the tool gap; a growing history makes the prompt the whole conversation so far.
            history = sum(pp + oo for pp, oo in p.calls[: index + 1])
            sim.submit(
                SimRequest(
                    f"{agent_id}/{index + 1}",
                    agent_id,
                    arrival=req.finished_at + 1 + p.gaps[index],
                    max_tokens=output,
                    prompt_tokens=history + prompt,
                )
            )
    return completion, sim


def mean_completion(completion: dict[str, int]) -> float:
    return statistics.fmean(completion.values())
