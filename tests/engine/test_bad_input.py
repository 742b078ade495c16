"""Requests the engine cannot take raise EngineError naming the problem, and leave the engine usable."""

from __future__ import annotations

import pytest

from kernel.engine.core.interface import EngineError, EngineRequest, SamplingParams
from tests.engine.helpers import greedy


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(max_tokens=0), "max_tokens"),
        (dict(max_tokens=-3), "max_tokens"),
        (dict(temperature=-1.0), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=-1), "top_k"),
        (dict(stop=("",)), "stop"),
    ],
)
def test_bad_sampling_values(engine, params, message):
    with pytest.raises(EngineError, match=message):
        engine.add(EngineRequest("bad", [1, 2, 3], SamplingParams(**params)))


def test_bad_prompts(engine):
    with pytest.raises(EngineError, match="empty prompt"):
        engine.add(EngineRequest("bad", [], SamplingParams()))
    with pytest.raises(EngineError, match="context"):
        engine.add(EngineRequest("bad", [5] * engine.capacity().max_context, SamplingParams()))
    with pytest.raises(EngineError, match="token ids"):
        engine.add(EngineRequest("bad", [1, 10**9], SamplingParams()))
    with pytest.raises(EngineError, match="role"):
        engine.apply_chat_template([{"role": "user"}])
    with pytest.raises(EngineError, match="already produced"):
        engine.add(EngineRequest("bad", [1, 2], SamplingParams(max_tokens=2), output_ids=[3, 4]))


def test_bad_text_and_ids(engine):
    """Checked once for every paged engine (core/paged_engine.py): the CPU engine as the GPU one."""
    with pytest.raises(EngineError, match="string"):
        engine.tokenize(b"bytes, not text")
    for ids in ([1, -1], [10**9], [1.5], [True]):
        with pytest.raises(EngineError, match="token ids"):
            engine.detokenize(ids)
    assert engine.detokenize(engine.tokenize("still works")) == "still works"


def test_duplicate_id_and_engine_still_works(engine):
    prompt = engine.tokenize("Hello there")
    engine.add(EngineRequest("dup", prompt, SamplingParams(max_tokens=2)))
    with pytest.raises(EngineError, match="already running"):
        engine.add(EngineRequest("dup", prompt, SamplingParams(max_tokens=2)))
    engine.abort("dup")
    engine.abort("never-existed")  # ignored
    assert len(greedy(engine, prompt, 3)) == 3
