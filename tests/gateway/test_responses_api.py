"""The Responses API (/v1/responses) through the official openai client's client.responses.create against a real
gateway and aiosd: text, streamed events in OpenAI's order, function tools (streamed arguments, schema-valid),
previous_response_id carrying the conversation per key; and the per-key store's bounds (hypothesis vs a model)."""

import json
from collections import OrderedDict

import jsonschema
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.gateway.response_store import ResponseStore

WAIT_S = 120.0
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather of a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 40}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


def client(stack, agent="alice") -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.gateway.url, api_key=stack.keys[agent], max_retries=0, timeout=WAIT_S)


@pytest.fixture(scope="module")
def model(stack):
    return client(stack).models.list().data[0].id


def test_text_response(stack, model):
    response = client(stack).responses.create(
        model=model, input="Say hello.", instructions="Be brief.", max_output_tokens=16
    )
    assert response.status in ("completed", "incomplete") and response.id.startswith("resp_")
    assert response.output[0].type == "message" and response.output_text
    assert response.usage.output_tokens >= 1 and response.usage.input_tokens > 1


def test_streamed_text_events_in_order(stack, model):
    events = list(
        client(stack).responses.create(model=model, input="Count to five.", max_output_tokens=16, stream=True)
    )
    kinds = [e.type for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text and text == next(e.text for e in events if e.type == "response.output_text.done")
    assert events[-1].response.output_text == text


def test_function_call_then_its_output_through_previous_response_id(stack, model):
    api = client(stack)
    first = api.responses.create(
        model=model,
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice="required",
        max_output_tokens=60,
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER["parameters"])
    second = api.responses.create(
        model=model,
        previous_response_id=first.id,
        tools=[WEATHER],
        max_output_tokens=24,
        input=[
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": json.dumps({"temperature_c": 21})}
        ],
        tool_choice="none",
    )
    assert second.output[0].type == "message" and second.output_text
    assert second.previous_response_id == first.id
    third = api.responses.create(model=model, previous_response_id=second.id, input="Thanks.", max_output_tokens=4)
    # the whole conversation (call, output, second answer) is in the third prompt
    assert third.usage.input_tokens > second.usage.input_tokens + second.usage.output_tokens


def test_streamed_function_call_arguments(stack, model):
    events = list(
        client(stack).responses.create(
            model=model,
            input="Weather in Rome?",
            tools=[WEATHER],
            tool_choice="required",
            max_output_tokens=60,
            stream=True,
        )
    )
    kinds = [e.type for e in events]
    added = next(e for e in events if e.type == "response.output_item.added")
    assert added.item.type == "function_call" and added.item.name == "get_weather"
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(deltas) >= 2 and kinds.index("response.function_call_arguments.delta") > kinds.index(
        "response.output_item.added"
    )
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == "".join(deltas)
    jsonschema.validate(json.loads(done.arguments), WEATHER["parameters"])
    assert kinds[-1] == "response.completed"
    assert events[-1].response.output[0].arguments == done.arguments


def test_previous_response_of_another_key_is_not_found(stack, model):
    mine = client(stack, "alice").responses.create(model=model, input="Hi", max_output_tokens=4)
    with pytest.raises(openai.NotFoundError):
        client(stack, "bob").responses.create(
            model=model, input="Hi", previous_response_id=mine.id, max_output_tokens=4
        )
    with pytest.raises(openai.NotFoundError):
        client(stack).responses.create(model=model, input="Hi", previous_response_id="resp_nope", max_output_tokens=4)


def test_unstored_response_cannot_be_continued(stack, model):
    response = client(stack).responses.create(model=model, input="Hi", max_output_tokens=4, store=False)
    with pytest.raises(openai.NotFoundError):
        client(stack).responses.create(model=model, input="Hi", previous_response_id=response.id, max_output_tokens=4)


def test_hosted_tools_are_refused_naming_the_type(stack, model):
    with pytest.raises(openai.BadRequestError) as caught:
        client(stack).responses.create(model=model, input="Hi", tools=[{"type": "web_search"}])
    assert "web_search" in caught.value.body["message"]


# ---- the store's bounds ----------------------------------------------------------------------------------------------
OPS = st.lists(
    st.tuples(st.sampled_from(["put", "get"]), st.sampled_from(["k1", "k2"]), st.integers(0, 9), st.integers(0, 300)),
    max_size=60,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(ops=OPS, max_responses=st.integers(1, 5), max_bytes=st.integers(50, 1200))
def test_store_is_a_bounded_lru_per_key(ops, max_responses, max_bytes):
    store = ResponseStore(max_responses, max_bytes)
    model: dict[str, OrderedDict] = {}
    for op, key, rid, size in ops:
        messages = [{"role": "user", "content": "x" * size}]
        weight = len(json.dumps(messages, separators=(",", ":")))
        mine = model.setdefault(key, OrderedDict())
        if op == "put":
            assert store.put(key, f"r{rid}", messages) == (weight <= max_bytes)
            if weight <= max_bytes:
                mine.pop(rid, None)
                mine[rid] = weight
                while len(mine) > max_responses or sum(mine.values()) > max_bytes:
                    mine.popitem(last=False)
        else:
            got = store.get(key, f"r{rid}")
            assert (got is not None) == (rid in mine)
            if got is not None:
                mine.move_to_end(rid)
        count, held = store.usage(key)
        assert count == len(mine) <= max_responses and held == sum(mine.values()) <= max_bytes
