"""Grammar-constrained sequences in the engine (SmolLM2, float32): output follows the grammar and ends with it, shares
a batch without changing unconstrained rows, resumes identically by recompute and from a snapshot, bad grammars are
refused at add(), compiled grammars are reused."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from kernel.engine.core.interface import EngineError, EngineRequest, FinishReason, SamplingParams
from kernel.engine.structured.grammar import json_schema_grammar, lark_grammar, regex_grammar
from tests.engine.helpers import Result, drain, generate, record

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "age", "pet"],
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "maximum": 120},
        "pet": {"enum": ["cat", "dog", "none"]},
    },
}


def _prompt(engine, text="Describe a person as a JSON object with name, age and pet.") -> list[int]:
    return engine.apply_chat_template([{"role": "user", "content": text}])


def _steps(engine, n: int, results: dict[str, Result]) -> None:
    for _ in range(n):
        record(engine.step(), results)


def test_grammar_json_schema_output_validates_and_ends_with_stop(engine):
    params = SamplingParams(max_tokens=48, grammar=json_schema_grammar(SCHEMA))
    result = generate(engine, {"c": _prompt(engine)}, **params.__dict__)["c"]
    assert result.reason == FinishReason.STOP  # ended by the grammar, not by max_tokens or EOS
    jsonschema.validate(json.loads(result.text), SCHEMA)
    assert engine.detokenize(result.tokens) == result.text  # the last (closing) token is delivered, not withheld


def test_grammar_regex_forces_the_text(engine):
    result = generate(
        engine, {"r": _prompt(engine, "Say anything.")}, max_tokens=20, grammar=regex_grammar(r"(yes|no), [0-9]{3}")
    )["r"]
    assert result.reason == FinishReason.STOP and re.fullmatch(r"(yes|no), [0-9]{3}", result.text)


def test_grammar_rows_leave_unconstrained_rows_token_identical(engine):
    """Constrained and unconstrained sequences in one batch: the free ones (greedy and seeded sampling) produce
    exactly their solo tokens, and the constrained ones their solo constrained tokens."""
    free_prompt = _prompt(engine, "Name three planets.")
    json_prompt = _prompt(engine)
    free = dict(max_tokens=16, ignore_eos=True)
    sampled = dict(max_tokens=16, ignore_eos=True, temperature=0.8, seed=7)
    constrained = dict(max_tokens=40, grammar=json_schema_grammar(SCHEMA))
    solo = {
        name: generate(engine, {name: prompt}, **params)[name].tokens
        for name, prompt, params in [
            ("free", free_prompt, free),
            ("sampled", free_prompt, sampled),
            ("json", json_prompt, constrained),
        ]
    }
    for name, prompt, params in [
        ("free", free_prompt, free),
        ("json", json_prompt, constrained),
        ("sampled", free_prompt, sampled),
        ("json2", json_prompt, {**constrained, "temperature": 0.9, "seed": 3}),
    ]:
        engine.add(EngineRequest(name, prompt, SamplingParams(**params)))
    batched = drain(engine)
    assert batched["free"].tokens == solo["free"]
    assert batched["sampled"].tokens == solo["sampled"]
    assert batched["json"].tokens == solo["json"]
    jsonschema.validate(json.loads(batched["json2"].text), SCHEMA)


@pytest.mark.parametrize("via", ["recompute", "snapshot"])
def test_grammar_resume_after_preemption_matches_uninterrupted(engine, via):
    """Interrupted after a few tokens (mid-document), then re-admitted with its output so far — by recompute, or with
    its KV snapshot — a sampled constrained sequence continues exactly as it would have: its matcher is rebuilt from
    its output ids and its RNG state comes back."""
    prompt = _prompt(engine)
    params = SamplingParams(max_tokens=40, temperature=0.7, seed=11, grammar=json_schema_grammar(SCHEMA))
    whole = generate(engine, {"whole": prompt}, **params.__dict__)["whole"]
    assert whole.reason == FinishReason.STOP and len(whole.tokens) > 6

    engine.add(EngineRequest("r", prompt, params))
    results: dict[str, Result] = {}
    _steps(engine, 5, results)
    produced = results["r"].tokens
    assert produced == whole.tokens[: len(produced)] and 0 < len(produced) < len(whole.tokens)
    buffer = bytearray(engine.kv_nbytes("r"))
    meta = engine.save_kv("r", memoryview(buffer))
    engine.abort("r")
    resumed = EngineRequest("r", prompt, params, list(produced), rng_state=meta.rng_state)
    if via == "snapshot":
        engine.load_kv(resumed, meta, memoryview(bytes(buffer)))
    else:
        engine.add(resumed)
    drain(engine, results)
    assert results["r"].tokens == whole.tokens and results["r"].reason == FinishReason.STOP
    assert results["r"].text == whole.text


def test_grammar_resume_refuses_output_outside_the_grammar(engine):
    prompt = _prompt(engine)
    bad_output = engine.tokenize("hello")  # a JSON object cannot start with "hello"
    with pytest.raises(EngineError, match="do not follow its grammar"):
        engine.add(
            EngineRequest("r", prompt, SamplingParams(max_tokens=20, grammar=json_schema_grammar(SCHEMA)), bad_output)
        )
    assert engine.request_ids() == []


@pytest.mark.parametrize("spec", ["start: (", 'start: "a" undefined_rule', "%json {not json"])
def test_grammar_that_does_not_compile_is_refused_at_add(engine, spec):
    free_before = engine.capacity().free_blocks
    with pytest.raises(EngineError, match="grammar"):
        engine.add(EngineRequest("bad", _prompt(engine), SamplingParams(max_tokens=8, grammar=lark_grammar(spec))))
    assert engine.request_ids() == [] and engine.capacity().free_blocks == free_before


def test_grammar_field_validated():
    with pytest.raises(EngineError, match="grammar"):
        SamplingParams(grammar="  ").validate()
    with pytest.raises(EngineError, match="grammar"):
        SamplingParams(grammar=42).validate()  # type: ignore[arg-type]
    with pytest.raises(EngineError):
        json_schema_grammar({"type": float("nan")})


def test_grammar_compiled_once_per_spec(engine):
    compiler = engine._table._grammars
    spec = json_schema_grammar(
        {
            "type": "object",
            "properties": {"unique_key_for_cache_test": {"type": "boolean"}},
            "required": ["unique_key_for_cache_test"],
            "additionalProperties": False,
        }
    )
    before = compiler.compilations
    for i in range(3):
        engine.add(EngineRequest(f"c{i}", _prompt(engine), SamplingParams(max_tokens=16, grammar=spec)))
    results = drain(engine)
    assert compiler.compilations == before + 1
    assert {json.dumps(json.loads(r.text)) for r in results.values()} <= {
        '{"unique_key_for_cache_test": true}',
        '{"unique_key_for_cache_test": false}',
    }
