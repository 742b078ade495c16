"""Every policy, under a seeded mixed workload, only admits what fits, in the engine's blocks (the simulator asserts it
on every step), and the shared preemption arithmetic counts the blocks the engine reports."""

import random

import pytest

from kernel.engine.core.interface import Capacity
from kernel.scheduler.base import ReqState, RequestView
from kernel.scheduler.preemption import plan_preemptive
from kernel.scheduler.registry import make_scheduler
from tests.scheduler.simulator import SimRequest, Simulation


def view(req_id, blocks, slice_tokens=100, state=ReqState.RUNNING):
    return RequestView(
        req_id=req_id,
        agent_id="a",
        state=state,
        priority=0,
        arrival=0,
        prompt_tokens=16 * (blocks or 1),
        max_tokens=10,
        output_tokens=0,
        slice_tokens=slice_tokens,
        waiting_since=0,
        agent_service=0,
        kv_blocks=blocks,
    )


def capacity(free_blocks, running=0):
    return Capacity(
        free_blocks=free_blocks, total_blocks=100, block_size=16, running=running, max_batch=4, max_context=1600
    )


@pytest.mark.parametrize("name", ["fifo", "rr", "priority", "sjf", "las"])
def test_policy_respects_blocks_and_batch_and_finishes_everything(name):
    rng = random.Random(4)
    sim = Simulation(make_scheduler(name), max_batch=3, total_slots=400)  # 25 blocks of 16 tokens
    for i in range(40):
        sim.submit(
            SimRequest(
                f"r{i:02d}",
                agent_id=f"agent{i % 5}",
                arrival=rng.randrange(200),
                prompt_tokens=rng.randrange(10, 120),
                max_tokens=rng.randrange(1, 60),
                priority=rng.randrange(4),
            )
        )
    sim.run_until_done()
    assert len(sim.completion_order()) == 40
    assert sim.engine_preemptions > 0  # decodes ran out of blocks, and the policy re-admitted each one


def test_victims_are_preempted_only_when_that_admits_the_candidate():
    free = capacity(free_blocks=1, running=2)
    running = [view("small", blocks=2), view("big", blocks=6)]
    too_big = view("w", blocks=20, state=ReqState.WAITING)
    assert not plan_preemptive([too_big], running, free, lambda c, v: True)
    fits_after_one = view("w", blocks=3, state=ReqState.WAITING)
    plan = plan_preemptive([fits_after_one], running, free, lambda c, v: True)
    assert plan.preempt == ["small"] and plan.admit == ["w"]


def test_a_candidate_that_cannot_fit_is_not_overtaken():
    queue = [view("big", blocks=8, state=ReqState.WAITING), view("small", blocks=1, state=ReqState.WAITING)]
    plan = plan_preemptive(queue, [], capacity(free_blocks=5), lambda c, v: True)
    assert not plan


def test_admission_counts_the_engines_blocks_not_tokens():
    # 3 requests of 1 block each by token count (3 x 17 tokens fit 64 slots), 2 blocks each as the engine counts them
    waiting = [view(name, blocks=2, state=ReqState.WAITING) for name in ("a", "b", "c")]
    for name in ("fifo", "rr", "priority", "sjf", "las"):
        plan = make_scheduler(name).plan([], waiting, capacity(free_blocks=4), now=0)
        assert plan.admit == ["a", "b"], name


def test_a_view_without_engine_blocks_is_refused():
    with pytest.raises(ValueError, match="kv_blocks"):
        make_scheduler("fifo").plan([], [view("a", blocks=None, state=ReqState.WAITING)], capacity(4), now=0)
