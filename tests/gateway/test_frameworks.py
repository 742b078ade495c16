"""Agent frameworks through a real gateway and aiosd, knowing only its base_url and a key: the OpenAI Agents SDK in its
default (Responses API) mode, streamed and not, pydantic-ai (chat completions: tools, tool-output mode, native
structured output) and a LangGraph ReAct agent on langchain-openai (streamed chat, tool calls assembled from deltas).
What is asserted is the plumbing, not the small default model's wisdom: a tool is called with
arguments valid for its schema (tool_choice required), its result reaches the model, and the framework returns an
answer of the declared type."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

pydantic_ai = pytest.importorskip("pydantic_ai")
from pydantic_ai import Agent, NativeOutput  # noqa: E402
from pydantic_ai.models.openai import OpenAIChatModel  # noqa: E402
from pydantic_ai.providers.openai import OpenAIProvider  # noqa: E402

WAIT_S = 600.0
SCRIPT = Path(__file__).parent / "frameworks" / "openai_agents_weather.py"


@pytest.fixture(scope="module")
def model(stack):
    import openai

    return openai.OpenAI(base_url=stack.gateway.url, api_key=stack.keys["alice"]).models.list().data[0].id


# ---- the OpenAI Agents SDK (its own process: its package `agents` is shadowed by this repository's agents/) ----------
def run_openai_agent(stack, model, tmp_path, *extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OPENAI_API_KEY", "OPENAI_BASE_URL")}
    done = subprocess.run(
        [sys.executable, "-P", str(SCRIPT), stack.gateway.url, stack.keys["alice"], model, *extra],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["plain", "streamed"])
def test_openai_agents_sdk_runs_a_tool_using_agent(stack, model, tmp_path, mode):
    result = run_openai_agent(stack, model, tmp_path, mode)
    assert result["calls"] and all(isinstance(c["city"], str) for c in result["calls"])
    assert result["final_output"].strip()
    if mode == "streamed":
        assert "response.function_call_arguments.delta" in result["event_types"]
        assert "response.completed" in result["event_types"]


# ---- pydantic-ai ----------------------------------------------------------------------------------------------------
class Weather(BaseModel):
    city: str = Field(max_length=40)
    sunny: bool


def pydantic_model(stack, model) -> OpenAIChatModel:
    return OpenAIChatModel(model, provider=OpenAIProvider(base_url=stack.gateway.url, api_key=stack.keys["alice"]))


def tool_calls_of(result) -> list:
    return [
        part
        for message in result.all_messages()
        for part in getattr(message, "parts", ())
        if type(part).__name__ == "ToolCallPart"
    ]


def test_pydantic_ai_agent_calls_its_tool_and_returns_the_answer(stack, model):
    seen = []

    def settings(ctx) -> dict:
        # a call is required until the tool answered; then the model may answer in text
        answered = any(type(p).__name__ == "ToolReturnPart" for m in ctx.messages for p in getattr(m, "parts", ()))
        return {"max_tokens": 48, "temperature": 0.0, "tool_choice": "auto" if answered else "required"}

    agent = Agent(pydantic_model(stack, model), instructions="Use get_weather to answer.", model_settings=settings)

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """The current weather of a city."""
        seen.append(city)
        return f"It is sunny and 21 C in {city}."

    result = agent.run_sync("What is the weather in Paris?")
    assert seen and all(isinstance(c, str) for c in seen)
    assert [p.tool_name for p in tool_calls_of(result)][0] == "get_weather"
    assert isinstance(result.output, str)


def test_pydantic_ai_tool_output_mode_returns_a_valid_model(stack, model):
    agent = Agent(
        pydantic_model(stack, model), output_type=Weather, model_settings={"max_tokens": 60, "temperature": 0.0}
    )
    result = agent.run_sync("Is it sunny in Paris? Answer with the city and whether it is sunny.")
    assert isinstance(result.output, Weather)
    assert tool_calls_of(result)  # the output came through a (constrained) tool call


def test_pydantic_ai_native_structured_output(stack, model):
    agent = Agent(
        pydantic_model(stack, model),
        output_type=NativeOutput(Weather),
        model_settings={"max_tokens": 60, "temperature": 0.0},
    )
    result = agent.run_sync("Is it sunny in Paris? Answer with the city and whether it is sunny.")
    assert isinstance(result.output, Weather)
    assert not tool_calls_of(result)  # response_format json_schema, no tool


# ---- LangGraph (a ReAct agent on langchain-openai's ChatOpenAI, streamed: it assembles tool calls from deltas) -------
def test_langgraph_react_agent_calls_its_tool_and_answers(stack, model):
    langgraph_prebuilt = pytest.importorskip("langgraph.prebuilt")
    from langchain_core.messages import ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    seen = []

    @tool
    def get_weather(city: str) -> str:
        """The current weather of a city."""
        seen.append(city)
        return f"It is sunny and 21 C in {city}."

    llm = ChatOpenAI(
        model=model,
        base_url=stack.gateway.url,
        api_key=stack.keys["alice"],
        max_tokens=48,
        temperature=0,
        streaming=True,
        max_retries=0,
        timeout=WAIT_S,
    )
    required, free = llm.bind_tools([get_weather], tool_choice="required"), llm.bind_tools([get_weather])

    def pick(state, _runtime):
        # a call is required until the tool answered; then the model may answer in text
        return free if any(isinstance(m, ToolMessage) for m in state["messages"]) else required

    agent = langgraph_prebuilt.create_react_agent(pick, [get_weather])
    result = agent.invoke({"messages": [("user", "What is the weather in Paris?")]}, {"recursion_limit": 8})
    calls = [c for m in result["messages"] for c in getattr(m, "tool_calls", None) or ()]
    assert seen and calls[0]["name"] == "get_weather" and isinstance(calls[0]["args"]["city"], str)
    assert isinstance(result["messages"][-1].content, str)
