from kernel.scheduler.registry import make_scheduler
from tests.scheduler.simulator import SimRequest, Simulation


def test_higher_priority_runs_first():
    sim = Simulation(make_scheduler("priority"), max_batch=1)
    for req_id, priority in (("low", 1), ("high", 5), ("mid", 3)):
        sim.submit(SimRequest(req_id, "agent", arrival=0, max_tokens=4, priority=priority))
    sim.run_until_done()
    assert sim.completion_order() == ["high", "mid", "low"]


def test_a_high_priority_arrival_preempts_a_running_low_one_after_its_min_slice():
    sim = Simulation(make_scheduler("priority", min_slice=3), max_batch=1)
    sim.submit(SimRequest("low", "agent", arrival=0, max_tokens=20, priority=0))
    sim.submit(SimRequest("high", "agent", arrival=1, max_tokens=5, priority=4))
    sim.run_until_done()
    turns = [ids[0] for ids in sim.trace]
    assert turns[:8] == ["low"] * 3 + ["high"] * 5
    assert sim.preemptions == 1 and sim.completion_order() == ["high", "low"]


def test_close_priorities_do_not_preempt_within_the_margin():
    sim = Simulation(make_scheduler("priority", margin=2.0, aging_steps=10_000), max_batch=1)
    sim.submit(SimRequest("first", "agent", arrival=0, max_tokens=20, priority=3))
    sim.submit(SimRequest("second", "agent", arrival=1, max_tokens=5, priority=4))
    sim.run_until_done()
    assert sim.preemptions == 0 and sim.completion_order() == ["first", "second"]


def stream_of_high_priority_load(aging_steps: int, steps: int) -> Simulation:
    """Two batch slots, a high-priority request arriving every 2 steps (4 tokens each: the batch stays full), and one
    low-priority request submitted at the start."""
    sim = Simulation(make_scheduler("priority", aging_steps=aging_steps), max_batch=2)
    sim.submit(SimRequest("low", "background", arrival=0, max_tokens=30, priority=0))
    for i in range(steps // 2):
        sim.submit(SimRequest(f"high{i:04d}", "foreground", arrival=2 * i, max_tokens=4, priority=5))
    sim.run(steps)
    return sim


def test_aging_lets_a_low_priority_request_finish_under_continuous_high_priority_load():
    sim = stream_of_high_priority_load(aging_steps=10, steps=600)
    low = sim.requests["low"]
    assert low.finished_at is not None
    # The high-priority load kept being served while the low one made its way through.
    served_high = [r for r in sim.requests.values() if r.req_id.startswith("high") and r.finished_at is not None]
    assert len(served_high) >= 250


def test_without_aging_the_low_priority_request_starves():
    sim = stream_of_high_priority_load(aging_steps=10**9, steps=600)
    assert sim.requests["low"].finished_at is None
