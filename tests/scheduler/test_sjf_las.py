from kernel.scheduler.registry import make_scheduler
from tests.scheduler.simulator import SimRequest, Simulation


def test_sjf_runs_shortest_first_using_predictions_when_given():
    sim = Simulation(make_scheduler("sjf"), max_batch=1)
    sim.submit(SimRequest("long", "agent", arrival=0, max_tokens=30))
    sim.submit(SimRequest("short", "agent", arrival=0, max_tokens=5))
    sim.submit(SimRequest("predicted-short", "agent", arrival=0, max_tokens=100, predicted_tokens=2))
    sim.run(1)
    assert sim.trace[0] == ["predicted-short"]


def test_sjf_preempts_for_a_much_shorter_job_but_not_a_similar_one():
    sim = Simulation(make_scheduler("sjf", min_slice=2), max_batch=1)
    sim.submit(SimRequest("long", "agent", arrival=0, max_tokens=40))
    sim.submit(SimRequest("similar", "agent", arrival=1, max_tokens=30))
    sim.submit(SimRequest("tiny", "agent", arrival=3, max_tokens=3))
    sim.run_until_done()
    assert sim.preemptions == 1
    assert sim.completion_order() == ["tiny", "similar", "long"]
    assert sim.requests["tiny"].first_run_at == 3


def test_las_favours_the_program_with_the_least_service():
    sim = Simulation(make_scheduler("las", first_level=16, growth=2), max_batch=1)
    sim.agent_service.update({"veteran": 500, "fresh": 0})
    sim.submit(SimRequest("a-veteran-call", "veteran", arrival=0, max_tokens=4))
    sim.submit(SimRequest("b-fresh-call", "fresh", arrival=0, max_tokens=4))
    sim.run(1)
    assert sim.trace[0] == ["b-fresh-call"]


def test_las_preempts_a_long_program_for_a_fresh_one_and_counts_service_across_calls():
    sim = Simulation(make_scheduler("las", first_level=16, growth=2, min_slice=1), max_batch=1)
    # One program making calls back to back: its service accumulates over them.
    for i in range(4):
        sim.submit(SimRequest(f"agentA-{i}", "A", arrival=0, max_tokens=10))
    sim.submit(SimRequest("agentB-0", "B", arrival=25, max_tokens=10))
    sim.run(27)
    assert sim.agent_service["A"] >= 16
    assert sim.trace[25] == ["agentB-0"] and sim.preemptions == 1


def test_las_same_level_requests_do_not_preempt_each_other():
    sim = Simulation(make_scheduler("las", first_level=1000, min_slice=0), max_batch=1)
    sim.submit(SimRequest("a", "A", arrival=0, max_tokens=50))
    sim.submit(SimRequest("b", "B", arrival=1, max_tokens=50))
    sim.run_until_done()
    assert sim.preemptions == 0 and sim.completion_order() == ["a", "b"]


def test_las_promotes_a_starving_request():
    sim = Simulation(make_scheduler("las", first_level=4, growth=2, starvation_steps=50, min_slice=1), max_batch=1)
    sim.agent_service["old"] = 10_000
    sim.submit(SimRequest("old-call", "old", arrival=0, max_tokens=3))
    for i in range(100):
        sim.submit(SimRequest(f"fresh{i:03d}", f"fresh{i:03d}", arrival=i, max_tokens=2))
    sim.run(200)
    assert sim.requests["old-call"].finished_at is not None
    assert 50 <= sim.requests["old-call"].first_run_at < 60
