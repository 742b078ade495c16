"""One owner of capacity on the real torch engine at a tiny KV budget (4 blocks of 16 tokens, prefix cache off),
through the kernel's LLM service: a burst of ~20-token prompts that fits the budget in tokens but not in blocks all
finishes, each with its solo output, none with engine_error, and the engine's own preemptions show in the request
table. Counted in tokens (before), the plan admitted all three and the third call failed with engine_error."""

from __future__ import annotations

import pytest

from kernel.engine.core.interface import SamplingParams
from kernel.scheduler.base import ReqState
from tests.scheduler.service import DrivenService

PROMPTS = {
    "france": "The capital of France is a city that has many old buildings and squares and long wide streets",
    "count": "One two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen",
    "story": "In the beginning the universe was created and this has made a lot of people very angry indeed",
}
PARAMS = SamplingParams(max_tokens=24, ignore_eos=True)


@pytest.fixture(scope="module")
def engine():
    from kernel.engine.factory import load_engine

    # float32: batched, solo and recomputed runs pick the same argmax
    return load_engine(dtype="float32", kv_budget_tokens=64, max_batch=4, prefix_cache=False)


@pytest.fixture(scope="module")
def solo(engine):
    """Each prompt's output run alone (it fits: prompt + 24 tokens is 3 blocks)."""
    outputs = {}
    for client_id, prompt in PROMPTS.items():
        driven = DrivenService(engine)
        try:
            driven.add(client_id, engine.tokenize(prompt), PARAMS)
            driven.run_until_answered()
            outputs[client_id] = driven.text(client_id)
        finally:
            driven.close()
    return outputs


@pytest.mark.parametrize("policy", ["fifo", "rr"])
def test_a_burst_over_the_block_budget_finishes_token_identical(engine, solo, policy):
    # 16-20 tokens: 3 x (prompt + next token) fits the 64 slots, but each is 2 blocks and the engine has 4
    assert all(16 <= len(engine.tokenize(p)) <= 20 for p in PROMPTS.values())
    driven = DrivenService(engine, scheduler=policy, **({"quantum": 8} if policy == "rr" else {}))
    try:
        for client_id, prompt in PROMPTS.items():
            driven.add(client_id, engine.tokenize(prompt), PARAMS)
        driven.run_until_answered()
        assert driven.replies.errors == {}
        assert {c: driven.text(c) for c in PROMPTS} == solo
        # The engine ran out of decode blocks and preempted on its own; the request table showed it.
        assert any(ReqState.PREEMPTED in states for states in driven.states.values())
        assert engine.capacity().free_blocks == engine.capacity().total_blocks
    finally:
        driven.close()
