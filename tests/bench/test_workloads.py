import json
import random

import pytest

from bench.text import WORDS, words_text
from bench.trace import TraceError, load_trace, trace_from_dict
from bench.workloads import MIXES, generate, trace_path


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_same_seed_same_trace_and_saved_trace_matches(mix):
    assert generate(mix, 0) == generate(mix, 0)
    assert generate(mix, 0) != generate(mix, 1)
    saved = trace_path(mix, 0)
    if saved.exists():  # the committed trace is exactly what the generator makes
        assert load_trace(saved) == generate(mix, 0)


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_trace_round_trips_through_json(mix):
    trace = generate(mix, 3)
    assert trace_from_dict(json.loads(trace.to_json())) == trace


def test_call_texts_have_their_stated_word_counts():
    for mix in MIXES:
        for agent in generate(mix, 0).agents:
            for call in agent.calls:
                assert len(call.text.split()) == call.text_tokens


def test_every_word_is_one_token_of_the_default_model():
    from kernel.engine.loading.checkpoint import default_model_path
    from kernel.engine.loading.gguf_loader import gguf_metadata, read_gguf
    from kernel.engine.loading.tokenizer import TextTokenizer

    tokenizer = TextTokenizer.from_gguf_metadata(gguf_metadata(read_gguf(default_model_path())))
    text = words_text(random.Random(0), 300)
    assert len(tokenizer.encode(text)) == 300
    assert all(len(tokenizer.encode(" " + word)) == 1 for word in WORDS)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d["agents"].clear(), "at least one agent"),
        (lambda d: d["agents"].append(dict(d["agents"][0])), "unique"),
        (lambda d: d["agents"][0]["calls"][0].update(max_tokens=0), "bad call lengths"),
        (lambda d: d["agents"][0].update(prefix="missing"), "unknown prefix"),
        (lambda d: d["agents"][0]["calls"][0].update(tool_after={"kind": "teleport", "seconds": 1}), "bad tool gap"),
        (lambda d: d.pop("name"), "malformed"),
    ],
)
def test_bad_traces_are_rejected_with_a_reason(mutate, message):
    data = json.loads(generate("smoke", 0).to_json())
    mutate(data)
    with pytest.raises(TraceError, match=message):
        trace_from_dict(data)


def test_unknown_mix_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown workload mix"):
        generate("nope", 0)
