"""The context-length rule, written once (kernel/engine/core/interface.check_context_length): a request fits when
prompt + max_tokens <= the context. The sequence table holds every sequence to the same rule with one token to come
(room for its next token), so what the kernel admits the engine always takes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.engine.core.block_pool import BlockPool
from kernel.engine.core.interface import (
    ContextLengthExceeded,
    EngineError,
    EngineRequest,
    SamplingParams,
    check_context_length,
)
from kernel.engine.core.sequence_table import SequenceTable

BLOCK = 4


@given(st.integers(0, 1 << 20), st.integers(1, 1 << 20), st.integers(1, 1 << 21))
def test_a_request_fits_exactly_when_prompt_plus_max_tokens_is_within_the_context(prompt, max_tokens, context):
    if prompt + max_tokens <= context:
        check_context_length(prompt, max_tokens, context)
    else:
        with pytest.raises(ContextLengthExceeded) as refused:
            check_context_length(prompt, max_tokens, context)
        assert all(str(n) in str(refused.value) for n in (prompt, max_tokens, context))


@given(st.integers(2, 4096), st.integers(1, 4096))
def test_at_the_limit_fits_and_one_over_does_not(context, max_tokens):
    prompt = max(context - max_tokens, 0)
    check_context_length(prompt, context - prompt, context)
    with pytest.raises(ContextLengthExceeded):
        check_context_length(prompt + 1, context - prompt, context)
    with pytest.raises(ContextLengthExceeded):
        check_context_length(prompt, context - prompt + 1, context)


def _table(context: int) -> SequenceTable:
    return SequenceTable(
        BlockPool(64, BLOCK),
        max_batch=4,
        model_max_context=context,
        vocab_size=50,
        eos_ids=(49,),
        decode=lambda ids: "x" * len(ids),
    )


def test_the_sequence_table_takes_a_prompt_one_short_of_its_context_and_refuses_a_full_one():
    table = _table(32)
    table.admit(EngineRequest("fits", [1] * 31, SamplingParams(max_tokens=1)))
    with pytest.raises(ContextLengthExceeded) as refused:
        table.admit(EngineRequest("full", [1] * 32, SamplingParams(max_tokens=1)))
    assert isinstance(refused.value, EngineError)  # what the engine's callers already catch
    assert table.request_ids() == ["fits"]


def test_the_capacity_limit_is_the_context_bounded_by_the_pool():
    assert _table(32).capacity().context_limit == 32
    assert _table(10_000).capacity().context_limit == 64 * BLOCK
