"""Hostile request bodies through real HTTP (httpx) to the real gateway: malformed JSON, wrong types, huge and
non-finite values, unknown shapes. Every answer is a 4xx with an OpenAI error body (or a 200 for a body that happens
to be valid), never a 5xx, and the gateway keeps serving."""

import json

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sdk

LEAVES = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
HUGE = st.sampled_from(
    [10**30, -(10**30), 1 << 63, 1 << 64, -1, 0, 1e308, -1e308, 5e-324, "9" * 5000, [None] * 5000, {"a": [[[[[]]]]]}]
)
VALUES = JSON_VALUES | HUGE
CHAT_FIELDS = [
    "model",
    "messages",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "n",
    "logprobs",
    "response_format",
    "user",
]
COMPLETION_FIELDS = [
    "model",
    "prompt",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "stream",
    "echo",
    "suffix",
    "best_of",
    "logprobs",
]
# never a valid small max_tokens: a fuzzed body that is valid runs one token, not hundreds
MAX_TOKENS = st.sampled_from([1]) | HUGE | st.text(max_size=4) | st.floats(allow_nan=True)
MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "system", "assistant", "tool", "x"]) | VALUES,
        "content": st.text(max_size=30) | VALUES,
    },
    optional={"tool_calls": VALUES, "tool_call_id": VALUES, "name": VALUES},
)


@st.composite
def request_bodies(draw, model: str):
    chat = draw(st.booleans())
    body = (
        {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        if chat
        else {"model": model, "prompt": "hi", "max_tokens": 1}
    )
    for field in draw(st.lists(st.sampled_from(CHAT_FIELDS if chat else COMPLETION_FIELDS), max_size=3)):
        if draw(st.booleans()):
            body.pop(field, None)
        else:
            body[field] = draw(VALUES)
    if chat and draw(st.booleans()):
        body["messages"] = draw(st.lists(MESSAGE, max_size=3))
    if draw(st.booleans()):
        body["max_tokens"] = draw(MAX_TOKENS)
    kind = draw(st.sampled_from(["json", "json", "garbage", "any-json"]))
    raw = (
        json.dumps(body)
        if kind == "json"
        else json.dumps(draw(JSON_VALUES))
        if kind == "any-json"
        else draw(st.binary(max_size=64))
    )
    path = "/chat/completions" if chat else "/completions"
    priority = draw(st.none() | st.sampled_from(["0", "-21", "99", "abc", "1e3", "+3", ""]))
    return path, raw.encode() if isinstance(raw, str) else raw, priority


@pytest.fixture(scope="module")
def model(stack):
    with sdk.connect(stack.kernel.address, name="fuzz-reference") as kernel:
        return kernel.model


def test_hostile_bodies_get_4xx_never_5xx_and_the_gateway_keeps_serving(stack, model):
    with httpx2.Client(base_url=stack.gateway.url, timeout=120.0) as http:

        @settings(
            max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(request_bodies(model))
        def check(request):
            path, raw, priority = request
            headers = {"authorization": f"Bearer {stack.keys['alice']}", "content-type": "application/json"}
            if priority is not None:
                headers["x-aios-priority"] = priority
            response = http.post(path, content=raw, headers=headers)
            assert response.status_code < 500, (raw[:300], response.status_code, response.text[:300])
            if response.status_code >= 400:
                error = response.json()["error"]
                assert isinstance(error["message"], str) and error["type"]

        check()
        assert stack.gateway.alive()
        ok = http.post(
            "/completions",
            headers={"authorization": f"Bearer {stack.keys['alice']}"},
            json={"model": model, "prompt": "hi", "max_tokens": 1},
        )
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 1
