"""Program-level LAS (kernel/scheduler/plas.py) on the scheduler simulator: program-start order within a level, gradual
aging with a bounded wait, and mean program completion against FIFO on program mixes (tests/scheduler/programs.py)."""

import random
import statistics

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel.scheduler.base import ReqState, RequestView
from kernel.scheduler.registry import make_scheduler
from tests.scheduler.programs import Program, heavy_tailed, light_tailed, mean_completion, run_programs
from tests.scheduler.simulator import SimRequest, Simulation


def view(req_id, agent, service, waiting_since=0, arrival=0, program_arrival=None):
    return RequestView(
        req_id=req_id,
        agent_id=agent,
        state=ReqState.WAITING,
        priority=0,
        arrival=arrival,
        prompt_tokens=4,
        max_tokens=4,
        output_tokens=0,
        slice_tokens=0,
        waiting_since=waiting_since,
        agent_service=service,
        kv_blocks=1,
        program_arrival=program_arrival,
    )


def test_a_waiting_call_ages_one_level_per_aging_period():
    plas = make_scheduler("plas", first_level=10, growth=2, levels=5, aging_steps=100)
    old = view("r", "A", service=10 * 2**3)  # level 4
    assert [plas.effective_level(old, now) for now in (0, 99, 100, 250, 399, 400, 10_000)] == [4, 4, 3, 2, 1, 0, 0]
    assert plas.max_aging_wait() == 400


def test_within_a_level_a_program_back_from_its_tool_goes_before_a_program_that_started_later():
    sim = Simulation(make_scheduler("plas", first_level=1000), max_batch=1)
    sim.submit(SimRequest("busy", "Z", arrival=0, max_tokens=5))
    sim.submit(SimRequest("old/0", "old", arrival=0, max_tokens=1))
    sim.run(6)  # Z's call, then old's first call; old is in its tool
    sim.submit(SimRequest("z/1", "Z", arrival=6, max_tokens=20))  # holds the engine while the next two queue
    sim.submit(SimRequest("new/0", "new", arrival=7, max_tokens=3))
    sim.submit(SimRequest("old/1", "old", arrival=8, max_tokens=3))  # back from the tool after new arrived
    sim.run_until_done()
    order = sim.completion_order()
    # same level everywhere: program start decides, not the call's arrival (fifo would run new/0 first)
    assert order == ["busy", "old/0", "z/1", "old/1", "new/0"]


def test_a_fresh_program_preempts_a_long_one_only_after_its_min_slice():
    sim = Simulation(make_scheduler("plas", first_level=16, growth=2, min_slice=5), max_batch=1)
    sim.agent_service["long"] = 500
    sim.submit(SimRequest("long/7", "long", arrival=0, max_tokens=40))
    sim.submit(SimRequest("fresh/0", "fresh", arrival=2, max_tokens=3))
    sim.run_until_done()
    assert sim.preemptions == 1
    assert sim.requests["fresh/0"].first_run_at == 5  # after long/7's 5-token slice, not at its arrival
    assert sim.completion_order() == ["fresh/0", "long/7"]


programs = st.lists(
    st.tuples(st.integers(0, 300), st.integers(1, 4), st.integers(1, 30), st.integers(0, 20)), min_size=1, max_size=14
)


def longest_waits(sim) -> dict[str, int]:
    """Per call, the longest run of steps it spent queued (before its first step, or between preemption and resume)."""
    ran: dict[str, list[int]] = {}
    for step, running in enumerate(sim.trace):
        for req_id in running:
            ran.setdefault(req_id, []).append(step)
    return {
        req_id: max([steps[0] - sim.requests[req_id].arrival] + [b - a - 1 for a, b in zip(steps, steps[1:])])
        for req_id, steps in ran.items()
    }


def assert_waits_bounded(plas, progs, sim):
    started = {p.agent_id: p.arrival for p in progs}
    for req_id, wait in longest_waits(sim).items():
        agent = sim.requests[req_id].agent_id
        ahead = sum(p.tokens for p in progs if started[p.agent_id] <= started[agent])
        assert wait <= plas.max_aging_wait() + plas.min_slice + ahead, (req_id, wait)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs, st.integers(1, 3), st.integers(1, 40))
def test_every_wait_is_bounded_by_aging_and_the_work_of_programs_that_started_before(specs, batch, aging_steps):
    """Starvation bound: a queued call (new or preempted) waits at most the aging period to level 0, one min_slice for
    the running calls to become preemptible, and the work of programs that started no later than its own (they may
    precede it at level 0); arrivals after its program's start never delay it past that."""
    plas = make_scheduler("plas", first_level=8, growth=2, levels=4, aging_steps=aging_steps, min_slice=3)
    progs = [
        Program(f"p{i:02d}", arrival, tuple((4, out) for _ in range(calls)), tuple(gap for _ in range(calls - 1)))
        for i, (arrival, calls, out, gap) in enumerate(specs)
    ]
    _, sim = run_programs(plas, progs, max_batch=batch)
    assert_waits_bounded(plas, progs, sim)


def test_a_stream_of_fresh_programs_does_not_starve_an_old_long_one():
    """The adversarial case: short programs arriving as fast as the engine serves them, forever ahead in level."""
    plas = make_scheduler("plas", first_level=8, growth=2, levels=4, aging_steps=5, min_slice=3)
    progs = [Program("p00", 0, ((4, 30), (4, 30)), (0,))]
    progs += [Program(f"p{i:02d}", 3 * i, ((4, 3),), ()) for i in range(1, 120)]
    _, sim = run_programs(plas, progs, max_batch=1)
    assert_waits_bounded(plas, progs, sim)
    assert sim.requests["p00/1"].finished_at < 3 * 120  # done while the stream still runs


def ratios(mix, **size):
    """fifo / plas mean program completion, per seed (batch 4)."""
    out = []
    for seed in range(3):
        means = {
            name: mean_completion(run_programs(make_scheduler(name), mix(random.Random(seed), **size), max_batch=4)[0])
            for name in ("fifo", "plas")
        }
        out.append(means["fifo"] / means["plas"])
    return out


def test_plas_beats_fifo_when_programs_are_alike_and_the_engine_is_loaded():
    # Identical 3-call programs: finishing programs in the order they started beats interleaving their calls.
    assert statistics.median(ratios(light_tailed, n=60, span=800)) >= 1.2


def test_plas_is_not_worse_than_fifo_on_heavy_tailed_program_lengths():
    assert statistics.median(ratios(heavy_tailed, n=60, span=1200)) >= 0.95
