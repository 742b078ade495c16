from kernel.scheduler.registry import make_scheduler
from tests.scheduler.simulator import SimRequest, Simulation


def test_fifo_runs_in_arrival_order_without_preempting():
    sim = Simulation(make_scheduler("fifo"), max_batch=1)
    for req_id, arrival in (("c", 2), ("a", 0), ("b", 1)):
        sim.submit(SimRequest(req_id, "agent", arrival=arrival, max_tokens=5))
    sim.run_until_done()
    assert sim.completion_order() == ["a", "b", "c"] and sim.preemptions == 0


def test_rr_rotates_every_quantum():
    sim = Simulation(make_scheduler("rr", quantum=4), max_batch=1)
    for req_id in "abc":
        sim.submit(SimRequest(req_id, "agent", arrival=0, max_tokens=12))
    sim.run_until_done()
    turns = [ids[0] for ids in sim.trace]
    assert turns == (["a"] * 4 + ["b"] * 4 + ["c"] * 4) * 3
    assert sim.preemptions == 6  # the last round ends each request instead of preempting it


def test_rr_does_not_preempt_when_nobody_waits():
    sim = Simulation(make_scheduler("rr", quantum=2), max_batch=2)
    for req_id in "ab":
        sim.submit(SimRequest(req_id, "agent", arrival=0, max_tokens=10))
    sim.run_until_done()
    assert sim.preemptions == 0 and sim.now == 10


def test_rr_preempted_request_goes_behind_those_already_waiting():
    sim = Simulation(make_scheduler("rr", quantum=3), max_batch=1)
    sim.submit(SimRequest("a", "agent", arrival=0, max_tokens=6))
    sim.submit(SimRequest("b", "agent", arrival=1, max_tokens=3))
    sim.submit(SimRequest("c", "agent", arrival=2, max_tokens=3))
    sim.run_until_done()
    assert [ids[0] for ids in sim.trace] == list("aaabbbcccaaa")
