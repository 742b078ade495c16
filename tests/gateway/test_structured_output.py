"""response_format through the gateway and a real aiosd (the constrained decoder): json_object answers parse as
objects, json_schema answers validate against their schema over property-generated schemas, streamed or not, and a
schema with keywords the decoder cannot enforce is a 400 naming them."""

import json

import jsonschema
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

WAIT_S = 120.0
ASK = [{"role": "user", "content": "Describe a cat as JSON."}]


def client(stack, agent="alice") -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.gateway.url, api_key=stack.keys[agent], max_retries=0, timeout=WAIT_S)


@pytest.fixture(scope="module")
def model(stack) -> str:
    return client(stack).models.list().data[0].id


def json_schema_format(schema: dict, name: str = "answer") -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


# ---- generated schemas: every leaf bounded, so an answer fits in a few dozen tokens ----------------------------------
_NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
_LEAVES = st.one_of(
    st.builds(
        lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span},
        st.integers(-1000, 1000),
        st.integers(0, 1000),
    ),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.builds(
        lambda values: {"type": "string", "enum": values},
        st.lists(st.text(alphabet="abcxyz ", min_size=1, max_size=6), min_size=1, max_size=4, unique=True),
    ),
    st.builds(lambda n: {"type": "string", "maxLength": n}, st.integers(0, 6)),
    st.builds(
        lambda lo, hi: {"type": "string", "pattern": f"^[a-z]{{{lo},{lo + hi}}}$"}, st.integers(0, 3), st.integers(0, 3)
    ),
)


def _objects(children):
    return st.dictionaries(_NAMES, children, min_size=1, max_size=3).map(
        lambda props: {"type": "object", "properties": props, "required": sorted(props), "additionalProperties": False}
    )


_SCHEMAS = st.recursive(
    _LEAVES,
    lambda children: st.one_of(
        _objects(children),
        st.builds(lambda item, n: {"type": "array", "items": item, "maxItems": n}, children, st.integers(0, 2)),
        st.builds(lambda a, b: {"anyOf": [a, b]}, children, children),
    ),
    max_leaves=5,
)
SCHEMAS = st.one_of(_objects(_SCHEMAS), _SCHEMAS)


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(schema=SCHEMAS, stream=st.booleans())
def test_json_schema_answers_validate(stack, model, schema, stream):
    jsonschema.Draft202012Validator.check_schema(schema)
    kwargs = dict(model=model, messages=ASK, max_tokens=200, temperature=0, response_format=json_schema_format(schema))
    if stream:
        chunks = list(client(stack).chat.completions.create(stream=True, **kwargs))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    else:
        answer = client(stack).chat.completions.create(**kwargs)
        text, finish = answer.choices[0].message.content, answer.choices[0].finish_reason
    assert finish == "stop", (schema, text)
    jsonschema.validate(json.loads(text), schema)


def test_json_object_answer_is_an_object(stack, model):
    answer = client(stack).chat.completions.create(
        model=model, messages=ASK, max_tokens=200, response_format={"type": "json_object"}
    )
    assert answer.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(answer.choices[0].message.content), dict)


@pytest.mark.parametrize(
    "schema, named",
    [
        ({"not": {"type": "string"}}, "not"),
        (
            {"type": "object", "properties": {"a": {"type": "string"}}, "dependentSchemas": {"a": {}}},
            "dependentSchemas",
        ),
        ({"if": {"type": "string"}, "then": {"maxLength": 2}}, "if"),
        ({"type": "string", "format": "no-such-format"}, "no-such-format"),
    ],
)
def test_unenforceable_schema_is_a_400_naming_it(stack, model, schema, named):
    with pytest.raises(openai.BadRequestError) as caught:
        client(stack).chat.completions.create(
            model=model, messages=ASK, max_tokens=20, response_format=json_schema_format(schema)
        )
    assert named in caught.value.body["message"]


@pytest.mark.parametrize(
    "response_format",
    [{"type": "yaml"}, {"type": "json_schema"}, {"type": "json_schema", "json_schema": {"schema": 3}}],
)
def test_malformed_response_format_is_a_400(stack, model, response_format):
    with pytest.raises(openai.BadRequestError) as caught:
        client(stack).chat.completions.create(model=model, messages=ASK, max_tokens=20, response_format=response_format)
    assert caught.value.body["param"] == "response_format"


def test_tools_with_a_response_format_answer_a_call_or_valid_json(stack, model):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
        "required": ["city"],
        "additionalProperties": False,
    }
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": schema}}]
    answer = client(stack).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Which city is the capital of France?"}],
        max_tokens=60,
        tools=tools,
        response_format=json_schema_format(schema),
    )
    message = answer.choices[0].message
    if message.tool_calls:
        jsonschema.validate(json.loads(message.tool_calls[0].function.arguments), schema)
    else:
        jsonschema.validate(json.loads(message.content), schema)
