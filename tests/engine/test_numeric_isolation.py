"""A numerical failure ends one sequence, never the batch: non-finite logits or a failed draw finish that sequence
with FinishReason.ERROR while its neighbours run on token-identical to their solo runs."""

from __future__ import annotations

import torch

from kernel.engine.core.interface import MIN_TEMPERATURE, EngineRequest, FinishReason, SamplingParams
from kernel.engine.core.sampler import SamplingError, new_generator, sample
from tests.engine.helpers import drain, generate, greedy


def _prompt(engine, text: str) -> list[int]:
    return engine.apply_chat_template([{"role": "user", "content": text}])


def _poison_logits_of(engine, monkeypatch, req_id: str, after_samples: int) -> None:
    """From its (after_samples+1)-th sample on, req_id's logits row is NaN, as a model overflow would leave it."""
    chooser = engine._chooser
    real_choose = chooser.choose
    seen = {"n": 0}

    def choose(seqs, logits):
        logits = logits.clone()
        for row, seq in enumerate(seqs):
            if seq.req_id == req_id:
                seen["n"] += 1
                if seen["n"] > after_samples:
                    logits[row] = float("nan")
        return real_choose(seqs, logits)

    monkeypatch.setattr(chooser, "choose", choose)


def test_nan_logits_end_only_their_sequence(engine, monkeypatch):
    good_prompt = _prompt(engine, "Name three colours.")
    solo = greedy(engine, good_prompt, 24)
    _poison_logits_of(engine, monkeypatch, "bad", after_samples=3)
    engine.add(EngineRequest("good", good_prompt, SamplingParams(max_tokens=24, ignore_eos=True)))
    engine.add(
        EngineRequest(
            "bad",
            _prompt(engine, "Count to ten."),
            SamplingParams(max_tokens=24, temperature=0.8, seed=1, ignore_eos=True),
        )
    )
    events = []
    while engine.has_work():
        events += engine.step()  # never raises: the bad row is not the batch's failure
    good = [e for e in events if e.req_id == "good"]
    bad = [e for e in events if e.req_id == "bad"]
    assert [e.token_id for e in good] == solo and good[-1].finish_reason == FinishReason.LENGTH
    assert len([e for e in bad if e.token_id >= 0]) == 3  # the samples before the NaN
    assert bad[-1].finished and bad[-1].finish_reason == FinishReason.ERROR == "error"
    assert bad[-1].token_id == -1 and "non-finite" in bad[-1].error
    assert all(e.error is None for e in good)


def test_a_failed_sequence_leaves_the_prefix_cache(engine, monkeypatch):
    """Its K/V may be what made the logits non-finite: the next request with its prompt prefills afresh."""
    prompt = _prompt(engine, "A prompt long enough to fill a few KV blocks of sixteen tokens each, and then some.")
    _poison_logits_of(engine, monkeypatch, "bad", after_samples=0)
    done = generate(engine, {"bad": prompt}, max_tokens=4)
    assert done["bad"].reason == FinishReason.ERROR and done["bad"].tokens == []
    engine.add(EngineRequest("again", prompt, SamplingParams(max_tokens=1)))
    assert engine._table.lookup("again").num_computed == 0


def test_tiny_temperature_is_greedy_beside_a_running_call(engine):
    """The issue's reproduction: temperature=1e-300 used to overflow to NaN probabilities and fail the whole batch."""
    prompt = _prompt(engine, "Say hi.")
    other = _prompt(engine, "Name a river.")
    solo_other = greedy(engine, other, 12)
    engine.add(EngineRequest("other", other, SamplingParams(max_tokens=12, ignore_eos=True)))
    engine.add(
        EngineRequest("tiny", prompt, SamplingParams(max_tokens=12, temperature=1e-300, seed=5, ignore_eos=True))
    )
    done = drain(engine)
    assert done["other"].tokens == solo_other
    assert done["tiny"].reason == FinishReason.LENGTH and done["tiny"].tokens == greedy(engine, prompt, 12)


def test_sampler_guards_each_row():
    logits = torch.tensor(
        [
            [0.0, 3.0, 1.0],
            [float("nan"), 1.0, 0.0],
            [float("inf"), 0.0, 0.0],
            [float("-inf")] * 3,
            [float("-inf"), 2.0, 1.0],
        ]
    )
    params = [
        SamplingParams(),
        SamplingParams(),
        SamplingParams(temperature=1.0),
        SamplingParams(temperature=1.0),
        SamplingParams(temperature=MIN_TEMPERATURE / 2),
    ]
    out = sample(logits, params, [new_generator(0, None) for _ in params])
    assert out[0] == 1 and out[4] == 1  # -inf is a masked token, not a failure; tiny T is greedy
    assert all(isinstance(out[i], SamplingError) for i in (1, 2, 3))
