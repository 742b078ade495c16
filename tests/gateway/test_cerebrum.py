"""The AIOS SDK (Cerebrum, aios-agent-sdk on PyPI) against the gateway's /query, through the package's own client:
a chat answer, a tool call (tool_use: the named tool, schema-valid parameters), a JSON answer, and refusals of what
the route does not serve. Cerebrum sends no key, so it talks to a keyless gateway in front of the same kernel."""

import json

import jsonschema
import pytest
import requests

cerebrum_client = pytest.importorskip("cerebrum.client")
from cerebrum.llm.communication import LLMQuery  # noqa: E402

from kernel.gateway.process import GatewayProcess  # noqa: E402

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module")
def base_url(stack, tmp_path_factory):
    log = tmp_path_factory.mktemp("cerebrum") / "gateway.log"
    with GatewayProcess(stack.kernel.address, None, log) as gateway:
        yield gateway.url.removesuffix("/v1")


def test_chat(base_url):
    result = cerebrum_client.Cerebrum(base_url)._query_llm(
        "demo", LLMQuery(messages=[{"role": "user", "content": "Say hello."}])
    )
    response = result["response"]
    assert response["finished"] is True and response["response_message"].strip()
    assert response["tool_calls"] is None


def test_tool_use_calls_the_tool_with_valid_parameters(base_url):
    result = cerebrum_client.Cerebrum(base_url)._query_llm(
        "demo",
        LLMQuery(
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=[WEATHER],
            action_type="tool_use",
        ),
    )
    calls = result["response"]["tool_calls"]
    assert len(calls) == 1 and calls[0]["name"] == "get_weather"
    jsonschema.validate(calls[0]["parameters"], WEATHER["function"]["parameters"])


def test_json_return_type_is_an_object(base_url):
    result = cerebrum_client.Cerebrum(base_url)._query_llm(
        "demo", LLMQuery(messages=[{"role": "user", "content": "Describe Paris as JSON."}], message_return_type="json")
    )
    assert isinstance(json.loads(result["response"]["response_message"]), dict)


@pytest.mark.parametrize(
    "payload, param",
    [
        ({"query_type": "memory", "agent_name": "demo", "query_data": {}}, "query_type"),
        (
            {"query_type": "llm", "agent_name": "demo", "query_data": {"messages": [], "action_type": "chat"}},
            "query_data.messages",
        ),
        (
            {
                "query_type": "llm",
                "agent_name": "demo",
                "query_data": {"messages": [{"role": "user", "content": "x"}], "action_type": "tool_use"},
            },
            "query_data.tools",
        ),
    ],
)
def test_unserved_queries_are_400(base_url, payload, param):
    answer = requests.post(f"{base_url}/query", json=payload, timeout=120)
    assert answer.status_code == 400
    assert answer.json()["error"]["param"].startswith(param.split(".")[0])
