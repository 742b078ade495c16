"""The engine's side of one owner of capacity, on the SequenceTable both engines share (no model: the test plays the
forward pass): blocks_needed is exactly what an admission and its first decode take from the free blocks, prefix
sharing included; blocks_held is what an abort gives back; a valid admission that does not fit raises NoCapacity; and
take_preempted hands the engine's own preemptions over to the caller, who resumes them identically."""

from __future__ import annotations

import pytest
import torch

from kernel.engine.core.block_pool import BlockPool
from kernel.engine.core.interface import EngineError, EngineRequest, NoCapacity, SamplingParams
from kernel.engine.core.sequence_table import SequenceTable

BLOCK = 4
VOCAB = 50
PARAMS = SamplingParams(max_tokens=10)


def make_table(n_blocks: int = 8, caching: bool = True) -> SequenceTable:
    return SequenceTable(
        BlockPool(n_blocks, BLOCK, caching=caching),
        max_batch=4,
        model_max_context=1000,
        vocab_size=VOCAB,
        eos_ids=(VOCAB - 1,),
        decode=lambda ids: "".join(chr(97 + i) for i in ids),
    )


def run_pending(table: SequenceTable) -> None:
    for seq in table.running():
        table.advance(seq, seq.pending)


def emit(table: SequenceTable, tokens: list[int]) -> None:
    table.emit(table.running(), tokens)


def taken_by_admission(table: SequenceTable, req: EngineRequest) -> int:
    """Free blocks an admission and its first decode really take."""
    free = table.capacity().free_blocks
    table.admit(req)
    run_pending(table)
    emit(table, [1] * len(table.running()))
    assert table.ensure_decode_block(table.lookup(req.req_id))
    return free - table.capacity().free_blocks


@pytest.mark.parametrize("n_tokens", [3, 4, 7, 8, 9])
def test_blocks_needed_counts_prompt_output_and_next_token_in_whole_blocks(n_tokens):
    table = make_table()
    req = EngineRequest("a", list(range(n_tokens)), PARAMS)
    needed = table.blocks_needed(req)
    assert needed == -(-(n_tokens + 1) // BLOCK)
    assert taken_by_admission(table, req) == needed


def test_blocks_needed_leaves_out_prefix_blocks_a_running_sequence_shares():
    table = make_table()
    table.admit(EngineRequest("a", list(range(10)), PARAMS))
    run_pending(table)
    req = EngineRequest("b", list(range(8)) + [30, 31], PARAMS)  # shares a's first 2 blocks
    assert table.blocks_needed(req) == 3 - 2
    free = table.capacity().free_blocks
    table.admit(req)
    assert free - table.capacity().free_blocks == 1


def test_blocks_needed_counts_cached_blocks_nobody_holds_as_taken():
    # A finished sequence's registered blocks are cached but free: sharing them uses up free blocks all the same.
    table = make_table(n_blocks=4)
    table.admit(EngineRequest("a", list(range(12)), PARAMS))
    run_pending(table)
    table.abort("a")
    req = EngineRequest("b", list(range(8)) + list(range(20, 27)), PARAMS)  # 15 tokens: 4 blocks, 2 cached
    assert table.capacity().free_blocks == 4 and table.blocks_needed(req) == 4
    assert table.blocks_needed(req) == 4  # asking changes nothing
    table.admit(req)
    assert table.capacity().free_blocks == 0


def test_blocks_held_is_what_abort_gives_back():
    table = make_table()
    table.admit(EngineRequest("a", list(range(10)), PARAMS))
    run_pending(table)
    table.admit(EngineRequest("b", list(range(8)) + [30, 31], PARAMS))
    assert table.blocks_held("a") == 1 and table.blocks_held("b") == 1  # the 2 shared prefix blocks stay held
    free = table.capacity().free_blocks
    table.abort("b")
    assert table.capacity().free_blocks - free == 1


def test_a_valid_admission_that_does_not_fit_raises_no_capacity_and_a_bad_one_does_not():
    table = make_table(n_blocks=4, caching=False)
    table.admit(EngineRequest("a", list(range(12)), PARAMS))
    with pytest.raises(NoCapacity):
        table.admit(EngineRequest("big", list(range(6)), PARAMS))
    with pytest.raises(EngineError) as bad:
        table.admit(EngineRequest("bad", [VOCAB + 1], PARAMS))
    assert not isinstance(bad.value, NoCapacity)
    assert table.capacity().free_blocks == 1


def test_a_preemption_taken_by_the_caller_is_not_resumed_by_the_engine_and_resumes_identically_when_readmitted():
    sampled = SamplingParams(max_tokens=10, temperature=1.0, seed=7)
    table = make_table(n_blocks=2, caching=False)
    table.admit(EngineRequest("old", list(range(BLOCK)), PARAMS))  # its next token needs a second block
    young_prompt = list(range(20, 20 + BLOCK - 1))
    table.admit(EngineRequest("young", young_prompt, sampled))
    run_pending(table)
    emit(table, [7, 8])
    young = table.lookup("young")
    assert table.ensure_decode_block(table.lookup("old"))  # preempts young
    assert table.capacity().running == 2
    assert table.take_preempted() == ["young"] and table.take_preempted() == []
    assert table.capacity().running == 1 and not table.request_ids().count("young")
    table.abort("old")
    table.begin_step()
    assert table.running() == []  # the caller resumes it, not the engine
    table.admit(EngineRequest("young", young_prompt, sampled, output_ids=[8]))
    assert torch.equal(table.lookup("young").generator.get_state(), young.generator.get_state())  # same sampler


def test_aborting_a_taken_preemption_forgets_it():
    table = make_table(n_blocks=2, caching=False)
    table.admit(EngineRequest("old", list(range(BLOCK)), PARAMS))
    table.admit(EngineRequest("young", list(range(20, 23)), PARAMS))
    run_pending(table)
    emit(table, [7, 8])
    table.ensure_decode_block(table.lookup("old"))
    table.take_preempted()
    table.abort("young")
    table.abort("old")
    table.admit(EngineRequest("young", list(range(20, 23)), SamplingParams(max_tokens=10, seed=3)))
    seeded_afresh = torch.Generator().manual_seed(3).get_state()
    assert torch.equal(table.lookup("young").generator.get_state(), seeded_afresh)  # a new request, not a resume
