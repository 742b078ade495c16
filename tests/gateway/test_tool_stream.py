"""Streamed tool calls: the parser (kernel/gateway/tool_stream.py) over every split of the kernel's raw text into deltas
(hypothesis), and the gateway streaming a real aiosd's calls as OpenAI does: id and name first, then argument
fragments, several calls under parallel_tool_calls; first-delta latency against end-of-call printed."""

import json
import time

import jsonschema
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipc.messages import Completion, Timing, ToolCall, Usage
from kernel.engine.structured.tool_formats import GENERIC
from kernel.gateway.tool_stream import ArgumentsDelta, CallStart, ContentDelta, ToolDeltas

WAIT_S = 120.0
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
ARGUMENTS = st.dictionaries(st.text(max_size=8), _JSON, max_size=4)
NAMES = st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True)


def completion(text: str, calls: list[tuple[str, dict]]) -> Completion:
    return Completion(
        text=text,
        finish_reason="tool_calls" if calls else "eos",
        usage=Usage(prompt_tokens=1, completion_tokens=1),
        timing=Timing(queue_s=0, ttft_s=0, total_s=0),
        tool_calls=[ToolCall(id=f"k{i}", name=n, arguments=json.dumps(a)) for i, (n, a) in enumerate(calls)],
    )


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in zip(points, points[1:])]


def run(text: str, cuts: list[int], final: Completion):
    deltas, out = ToolDeltas(), []
    for piece in split(text, cuts):
        out += deltas.feed(piece)
    return out + deltas.finish(final)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(calls=st.lists(st.tuples(NAMES, ARGUMENTS), min_size=1, max_size=3), cuts=st.lists(st.integers(0, 10**4)))
def test_calls_stream_name_first_then_arguments_that_join_to_the_call(calls, cuts):
    text = "\n".join(GENERIC.format_call(name, args) for name, args in calls)
    out = run(text, cuts, completion("", calls))
    starts = [d for d in out if isinstance(d, CallStart)]
    assert [s.name for s in starts] == [name for name, _ in calls]
    assert not [d for d in out if isinstance(d, ContentDelta)]
    for index, (_, args) in enumerate(calls):
        position = out.index(starts[index])
        fragments = [d for d in out if isinstance(d, ArgumentsDelta) and d.index == index]
        assert all(out.index(f) > position for f in fragments)
        assert json.loads("".join(f.text for f in fragments)) == args


@settings(max_examples=200, deadline=None, derandomize=True)
@given(text=st.text(min_size=1).filter(lambda t: "<tool_call>" not in t), cuts=st.lists(st.integers(0, 10**4)))
def test_free_text_streams_as_content_unchanged(text, cuts):
    out = run(text, cuts, completion(text, []))
    assert all(isinstance(d, ContentDelta) for d in out)
    assert "".join(d.text for d in out) == text


def test_a_call_cut_short_streams_its_partial_arguments():
    text = GENERIC.format_call("f", {"a": "long text"})[:-20]
    out = run(text, [5, 30], completion("", []))
    assert [d.name for d in out if isinstance(d, CallStart)] == ["f"]
    assert "".join(d.text for d in out if isinstance(d, ArgumentsDelta)) == text[text.index('"arguments":') + 12 :]


# ---- through the gateway --------------------------------------------------------------------------------------------
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather of a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather and the time in Paris?"}]


@pytest.fixture(scope="module")
def api(stack):
    return openai.OpenAI(base_url=stack.gateway.url, api_key=stack.keys["alice"], max_retries=0, timeout=WAIT_S)


@pytest.fixture(scope="module")
def model(api):
    return api.models.list().data[0].id


def streamed_calls(api, model, **kwargs):
    """(calls as {index: [id, name, arguments]}, arrival times of each chunk kind, finish reason)."""
    calls, times, finish = {}, {"name": [], "arguments": []}, None
    start = time.perf_counter()
    for chunk in api.chat.completions.create(model=model, messages=ASK, stream=True, tools=[WEATHER, TIME], **kwargs):
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for call in choice.delta.tool_calls or ():
            entry = calls.setdefault(call.index, [None, None, ""])
            if call.id:
                assert entry[0] is None and not entry[2], "the id and name come first, once"
                entry[0], entry[1] = call.id, call.function.name
                times["name"].append(time.perf_counter() - start)
            if call.function and call.function.arguments:
                assert entry[1] is not None
                entry[2] += call.function.arguments
                times["arguments"].append(time.perf_counter() - start)
    return calls, times, finish


def test_a_required_call_streams_as_it_is_generated(api, model):
    calls, times, finish = streamed_calls(api, model, max_tokens=80, tool_choice="required")
    assert finish == "tool_calls" and len(calls) == 1
    _, name, arguments = calls[0]
    schema = {"get_weather": WEATHER, "get_time": TIME}[name]["function"]["parameters"]
    jsonschema.validate(json.loads(arguments), schema)
    assert len(times["arguments"]) >= 3, "the arguments arrive in several fragments, not at the end"
    print(f"\nfirst tool-call delta {times['name'][0] * 1e3:.0f} ms, end of call {times['arguments'][-1] * 1e3:.0f} ms")


def test_parallel_tool_calls_stream_one_index_each(api, model):
    calls, _, finish = streamed_calls(api, model, max_tokens=160, tool_choice="required", parallel_tool_calls=True)
    assert finish == "tool_calls" and calls
    assert sorted(calls) == list(range(len(calls)))
    assert len({c[0] for c in calls.values()}) == len(calls)
    for _, name, arguments in calls.values():
        jsonschema.validate(
            json.loads(arguments), {"get_weather": WEATHER, "get_time": TIME}[name]["function"]["parameters"]
        )


def test_streamed_and_unstreamed_calls_agree(api, model):
    calls, _, _ = streamed_calls(api, model, max_tokens=80, tool_choice="required", temperature=0)
    whole = (
        api.chat.completions.create(
            model=model, messages=ASK, tools=[WEATHER, TIME], max_tokens=80, tool_choice="required", temperature=0
        )
        .choices[0]
        .message.tool_calls
    )
    assert [(c.function.name, json.loads(c.function.arguments)) for c in whole] == [
        (calls[i][1], json.loads(calls[i][2])) for i in sorted(calls)
    ]
