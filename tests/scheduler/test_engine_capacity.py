"""One owner of capacity: the scheduler's plans, counted in the engine's blocks, admit only what the engine takes; a
request the engine cannot take yet waits instead of failing; and the sequences the engine preempts on its own show as
PREEMPTED in the kernel's request table and are re-admitted by the plan, finishing with the output of an uninterrupted
run. On the block-granular fake engine, through the kernel's LLM service."""

from __future__ import annotations

import pytest

from ipc.errors import ErrorCode
from kernel.engine.core.interface import SamplingParams
from kernel.scheduler.base import ReqState
from tests.kernel.fake_engine import FakeEngine, expected_output
from tests.scheduler.service import DrivenService

PROMPTS = {"p1": "x" * 20, "p2": "y" * 18, "p3": "z" * 20}  # 2 blocks of 16 each with the next token


@pytest.fixture
def service():
    driven = DrivenService(FakeEngine(kv_budget_tokens=64, max_batch=4))  # 4 blocks
    yield driven
    driven.close()


@pytest.mark.parametrize("policy", ["fifo", "rr", "priority", "sjf", "las"])
def test_a_burst_that_fits_in_tokens_but_not_in_blocks_all_finishes(policy):
    # 21 + 19 + 21 token slots fit the 64 of the budget; 2 + 2 + 2 blocks do not fit its 4. Counted in tokens, the plan
    # admitted all three and the third call failed with engine_error.
    driven = DrivenService(FakeEngine(kv_budget_tokens=64, max_batch=4), scheduler=policy)
    try:
        for client_id, prompt in PROMPTS.items():
            driven.add(client_id, list(prompt.encode()), SamplingParams(max_tokens=24))
        driven.run_until_answered()
        assert driven.replies.errors == {}
        assert {c: driven.text(c) for c in PROMPTS} == {c: expected_output(p, 24) for c, p in PROMPTS.items()}
        assert driven.engine.refusals == 0  # the plan never admitted what the engine then refused
    finally:
        driven.close()


def test_an_engine_preemption_shows_in_the_request_table_and_the_plan_resumes_it(service):
    # Two 31-token prompts take all 4 blocks; at its 33rd token the older needs a third and the engine preempts the
    # younger. The kernel marks it PREEMPTED, keeps it out while its 3 blocks are not free, then resumes it.
    service.add("old", list(b"o" * 31), SamplingParams(max_tokens=20))
    service.add("young", list(b"y" * 31), SamplingParams(max_tokens=20))
    service.run_until_answered()
    assert service.engine.preemptions == 1
    young = service.states["young"]
    assert ReqState.PREEMPTED in young and young[young.index(ReqState.PREEMPTED) :].count(ReqState.RUNNING) >= 1
    assert service.states["old"].count(ReqState.PREEMPTED) == 0
    assert service.text("old") == expected_output("o" * 31, 20)
    assert service.text("young") == expected_output("y" * 31, 20)  # resumed by recompute, token-identical


def test_a_request_the_engine_refuses_for_capacity_waits_and_then_runs(service):
    service.engine.refuse_next = 3
    service.add("late", list(b"hello"), SamplingParams(max_tokens=5))
    for _ in range(3):
        service.iteration()
        assert service.llm.requests.get("a1/late").state is ReqState.WAITING
    service.run_until_answered()
    assert service.engine.refusals == 3 and service.replies.errors == {}
    assert service.text("late") == expected_output("hello", 5)


def test_a_refused_admission_stops_the_rest_of_that_plan(service):
    # The second admission of the plan was counted on the first being taken: it waits for the next plan.
    service.engine.refuse_next = 1
    service.add("first", list(b"a" * 10), SamplingParams(max_tokens=3))
    service.add("second", list(b"b" * 10), SamplingParams(max_tokens=3))
    service.iteration()
    assert service.engine.refusals == 1 and service.engine.running == {}
    service.run_until_answered()
    assert service.replies.errors == {}


def test_a_request_the_engine_finds_invalid_still_fails(service):
    service.add("bad", list(b"hi"), SamplingParams(max_tokens=4, temperature=-1.0))  # past submit's checks
    service.add("good", list(b"hi"), SamplingParams(max_tokens=4))
    service.run_until_answered()
    assert service.replies.errors["bad"][0] is ErrorCode.ENGINE
    assert service.text("good") == expected_output("hi", 4)
