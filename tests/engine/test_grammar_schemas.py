"""100 random JSON schemas as tool parameters with tool_choice "required": the constrained call always parses, names
the tool and validates against the schema. Run on the tiny random llama the tests build (sampled at temperature 1:
a random model is a harsher test of the grammar than a trained one, and fast). Also a real engine preemption
(take_preempted → re-admit) of constrained sequences, on the same tiny model with a small KV budget."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from kernel.engine.core.interface import EngineRequest, FinishReason, SamplingParams
from kernel.engine.cpu.engine import TorchEngine
from kernel.engine.loading.checkpoint import load_checkpoint
from kernel.engine.structured.tool_calls import parse_tool_calls, tool_call_grammar
from tests.engine.helpers import Result, drain

# A second tool "required" may pick instead; bounded too (a free-form object is unbounded under a random model).
OTHER = {"type": "object", "properties": {"x": {"type": "boolean"}}, "required": ["x"], "additionalProperties": False}
SCHEMAS_PER_BATCH = 4  # 25 examples x 4 schemas decoded in one batch = 100 schemas
NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)


@pytest.fixture(scope="module")
def tiny_engine(tiny_gguf):
    return TorchEngine(load_checkpoint(tiny_gguf, torch.float32), "float32", kv_budget_tokens=4096, max_batch=8)


def _scalar() -> st.SearchStrategy[dict]:
    # Bounds keep every document finite within max_tokens (a random model does not stop a string by itself).
    string = st.builds(lambda n: {"type": "string", "maxLength": n}, st.integers(0, 6))
    integer = st.builds(
        lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span},
        st.integers(-1000, 1000),
        st.integers(0, 10_000),
    )
    number = st.builds(lambda lo: {"type": "number", "minimum": lo, "maximum": lo + 100}, st.integers(-50, 50))
    enum = st.lists(
        st.one_of(st.text(max_size=5), st.integers(-9, 9), st.booleans()), min_size=1, max_size=4, unique=True
    ).map(lambda values: {"enum": values})
    return st.one_of(string, integer, number, st.just({"type": "boolean"}), enum)


@st.composite
def _obj(draw, children: st.SearchStrategy[dict], max_props: int) -> dict:
    props = draw(st.dictionaries(NAMES, children, max_size=max_props))
    required = draw(st.lists(st.sampled_from(sorted(props)), unique=True)) if props else []
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def _array(items: st.SearchStrategy[dict]) -> st.SearchStrategy[dict]:
    return st.builds(lambda item, n: {"type": "array", "items": item, "maxItems": n}, items, st.integers(0, 3))


def _value(depth: int) -> st.SearchStrategy[dict]:
    if depth == 0:
        return _scalar()
    inner = _value(depth - 1)
    return st.one_of(_scalar(), _array(inner), _obj(inner, 3))


SCHEMAS = _obj(_value(2), 4)


# No shrinking: a failure prints its schemas at once (shrinking a decode takes minutes).
@settings(
    max_examples=100 // SCHEMAS_PER_BATCH,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(schemas=st.lists(SCHEMAS, min_size=SCHEMAS_PER_BATCH, max_size=SCHEMAS_PER_BATCH), seed=st.integers(0, 2**31))
def test_grammar_required_tool_call_validates_for_random_schemas(tiny_engine, schemas, seed):
    prompt = tiny_engine.apply_chat_template([{"role": "user", "content": "call the tool"}])
    for i, schema in enumerate(schemas):
        tools = [
            {"type": "function", "function": {"name": "other", "parameters": OTHER}},
            {"type": "function", "function": {"name": f"tool_{i}", "parameters": schema}},
        ]
        choice = {"type": "function", "function": {"name": f"tool_{i}"}} if i % 2 else "required"
        params = SamplingParams(
            max_tokens=400, temperature=1.0, seed=seed + i, grammar=tool_call_grammar(tools, choice)
        )
        tiny_engine.add(EngineRequest(f"s{i}", prompt, params))
    results = drain(tiny_engine)
    for i, schema in enumerate(schemas):
        result = results[f"s{i}"]
        assert result.reason == FinishReason.STOP, (schema, result.text)
        content, calls = parse_tool_calls(result.text)
        assert content == "" and len(calls) == 1, result.text
        assert calls[0].name in ("other", f"tool_{i}") if i % 2 == 0 else calls[0].name == f"tool_{i}"
        jsonschema.validate(json.loads(calls[0].arguments_json), schema if calls[0].name == f"tool_{i}" else OTHER)


def test_grammar_sequences_preempted_by_the_engine_resume_identically(tiny_gguf):
    """A KV pool too small for four sequences: the engine preempts the youngest, the caller takes them and re-admits
    each with its output so far (as the kernel does); every constrained sequence ends exactly as it does alone."""
    engine = TorchEngine(
        load_checkpoint(tiny_gguf, torch.float32), "float32", kv_budget_tokens=192, max_batch=4, block_size=16
    )
    schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["a", "b"],
        "properties": {
            "a": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 3},
            "b": {"type": "integer", "minimum": 0, "maximum": 10**6},
        },
    }
    grammar = tool_call_grammar([{"type": "function", "function": {"name": "f", "parameters": schema}}], "required")
    prompt = engine.apply_chat_template([{"role": "user", "content": "call"}])
    requests = {
        f"r{i}": EngineRequest(
            f"r{i}", prompt, SamplingParams(max_tokens=150, temperature=1.0, seed=i, grammar=grammar)
        )
        for i in range(4)
    }
    solo = {}
    for req_id, req in requests.items():
        engine.add(EngineRequest(req_id, list(req.prompt_ids), req.params))
        solo[req_id] = drain(engine)[req_id]
    for req in requests.values():
        engine.add(EngineRequest(req.req_id, list(req.prompt_ids), req.params))
    results: dict[str, Result] = {}
    preempted = 0
    while engine.has_work():
        for event in engine.step():
            result = results.setdefault(event.req_id, Result())
            if event.token_id >= 0:
                result.tokens.append(event.token_id)
            result.text += event.text
            result.reason = event.finish_reason if event.finished else None
        for req_id in engine.take_preempted():
            preempted += 1
            req = requests[req_id]
            # Re-admitted once an older one has finished and freed its blocks, like the kernel's scheduler does.
            pending = EngineRequest(req_id, list(req.prompt_ids), req.params, list(results[req_id].tokens))
            while engine.has_work() and engine.blocks_needed(pending) > engine.capacity().free_blocks:
                for event in engine.step():
                    result = results.setdefault(event.req_id, Result())
                    if event.token_id >= 0:
                        result.tokens.append(event.token_id)
                    result.text += event.text
                    result.reason = event.finish_reason if event.finished else None
            engine.add(pending)
    assert preempted >= 1
    for req_id, expected in solo.items():
        assert expected.reason == FinishReason.STOP
        assert results[req_id].tokens == expected.tokens and results[req_id].reason == expected.reason
        assert results[req_id].text == expected.text, (results[req_id].text, expected.text, expected.reason)
        assert [c.name for c in parse_tool_calls(results[req_id].text)[1]] == ["f"], (
            expected.reason,
            results[req_id].text,
        )
