"""Every policy, under a seeded mixed workload, only admits what fits (the simulator asserts it on every step)."""
import random

import pytest

from kernel.engine.interface import Capacity
from kernel.scheduler.base import ReqState, RequestView
from kernel.scheduler.preemption import plan_preemptive
from kernel.scheduler.registry import make_scheduler

from tests.scheduler.simulator import Simulation, SimRequest


def view(req_id, kv, slice_tokens=100, state=ReqState.RUNNING):
    return RequestView(req_id=req_id, agent_id="a", state=state, priority=0, arrival=0, prompt_tokens=kv,
                       max_tokens=10, output_tokens=0, slice_tokens=slice_tokens, waiting_since=0, agent_service=0)


@pytest.mark.parametrize("name", ["fifo", "rr", "priority", "sjf", "las"])
def test_policy_respects_slots_and_batch_and_finishes_everything(name):
    rng = random.Random(4)
    sim = Simulation(make_scheduler(name), max_batch=3, total_slots=400)
    for i in range(40):
        sim.submit(SimRequest(f"r{i:02d}", agent_id=f"agent{i % 5}", arrival=rng.randrange(200),
                              prompt_tokens=rng.randrange(10, 120), max_tokens=rng.randrange(1, 60),
                              priority=rng.randrange(4)))
    sim.run_until_done()
    assert len(sim.completion_order()) == 40


def test_victims_are_preempted_only_when_that_admits_the_candidate():
    capacity = Capacity(free_slots=10, total_slots=100, running=2, max_batch=4, max_context=100)
    running = [view("small", kv=20), view("big", kv=60)]
    too_big = view("w", kv=200, state=ReqState.WAITING)
    assert not plan_preemptive([too_big], running, capacity, lambda c, v: True)
    fits_after_one = view("w", kv=25, state=ReqState.WAITING)
    plan = plan_preemptive([fits_after_one], running, capacity, lambda c, v: True)
    assert plan.preempt == ["small"] and plan.admit == ["w"]


def test_a_candidate_that_cannot_fit_is_not_overtaken():
    capacity = Capacity(free_slots=50, total_slots=100, running=0, max_batch=4, max_context=100)
    plan = plan_preemptive([view("big", kv=80, state=ReqState.WAITING), view("small", kv=5, state=ReqState.WAITING)],
                           [], capacity, lambda c, v: True)
    assert not plan
