"""The sequence bookkeeping both engines share, driven without a model: the test plays the forward pass by calling
advance() and picks each next token with one-hot logits."""

from __future__ import annotations

import pytest

from kernel.engine.core.block_pool import BlockPool
from kernel.engine.core.interface import EngineError, EngineRequest, SamplingParams
from kernel.engine.core.sequence_table import SequenceTable

BLOCK = 4
VOCAB = 50
EOS = 49
PARAMS = SamplingParams(max_tokens=10)


def make_table(n_blocks: int = 6, max_batch: int = 4) -> SequenceTable:
    return SequenceTable(
        BlockPool(n_blocks, BLOCK),
        max_batch,
        model_max_context=1000,
        vocab_size=VOCAB,
        eos_ids=(EOS,),
        decode=lambda ids: "".join(chr(97 + i % 26) for i in ids),
    )


def run_pending(table: SequenceTable) -> None:
    """What a forward pass does to the table: every running sequence's pending tokens now have K/V."""
    for seq in table.running():
        table.advance(seq, seq.pending)


def test_full_blocks_are_shared_by_a_later_request_with_the_same_prefix():
    table = make_table()
    table.admit(EngineRequest("a", list(range(10)), PARAMS))
    run_pending(table)
    table.admit(EngineRequest("b", list(range(8)) + [30, 31], PARAMS))
    b = table.lookup("b")
    assert b.num_computed == 2 * BLOCK and b.block_table[:2] == table.lookup("a").block_table[:2]


def test_refused_admission_holds_no_blocks():
    table = make_table(n_blocks=4)
    table.admit(EngineRequest("a", list(range(12)), PARAMS))
    run_pending(table)
    free = table.capacity().free_slots
    with pytest.raises(EngineError, match="not enough free KV slots"):
        table.admit(EngineRequest("b", list(range(8)) + list(range(20, 27)), PARAMS))  # shares 2 blocks, needs 2
    assert table.capacity().free_slots == free
    table.abort("a")
    assert table.capacity().free_slots == table.capacity().total_slots


def test_out_of_blocks_preempts_the_youngest_and_resumes_it_when_blocks_free():
    table = make_table(n_blocks=2)
    table.admit(EngineRequest("old", list(range(BLOCK)), PARAMS))  # its next token needs a second block
    table.admit(EngineRequest("young", list(range(20, 20 + BLOCK - 1)), PARAMS))
    run_pending(table)
    old, young = table.lookup("old"), table.lookup("young")
    table.emit([old, young], [7, 8])
    assert table.ensure_decode_block(old)
    assert not table.is_running(young) and young.block_table == [] and young.num_computed == 0
    assert table.capacity().running == 2 and table.has_work()
    table.abort("old")
    table.begin_step()
    assert table.is_running(young) and young.pending == len(young.token_ids)  # recomputed from the start


def test_eos_finishes_and_the_sequence_stays_savable_until_the_next_step():
    table = make_table()
    table.admit(EngineRequest("a", [1, 2, 3], PARAMS))
    run_pending(table)
    [event] = table.emit([table.lookup("a")], [EOS])
    assert event.finished and event.finish_reason == "eos" and not table.has_work()
    assert table.lookup("a").num_computed == 3 and table.request_ids() == ["a"]
    table.begin_step()
    assert table.request_ids() == []
    assert table.capacity().free_slots == table.capacity().total_slots


@pytest.mark.parametrize(
    "req, message",
    [
        (EngineRequest("", [1], PARAMS), "req_id"),
        (EngineRequest("x", [1, True], PARAMS), "token ids"),
        (EngineRequest("x", [1, VOCAB], PARAMS), "token ids"),
        (EngineRequest("x", [1], "greedy"), "SamplingParams"),
    ],
)
def test_bad_requests_are_refused(req, message):
    table = make_table()
    with pytest.raises(EngineError, match=message):
        table.admit(req)
    assert not table.has_work()
