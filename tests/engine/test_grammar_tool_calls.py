"""Tool calls: prompt rendering, grammar per tool_choice, parsing round trips; on SmolLM2 (float32), "required" gives a
valid call and "auto" lets the model answer in text."""

from __future__ import annotations

import json

import jsonschema
import pytest

from kernel.engine.core.interface import EngineError, FinishReason
from kernel.engine.structured.tool_calls import ToolCall, format_tool_call, parse_tool_calls, tool_call_grammar
from kernel.engine.structured.tool_prompt import render_tool_prompt
from tests.engine.helpers import generate

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Current weather in a city", "parameters": WEATHER},
    },
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Evaluate arithmetic",
            "parameters": {
                "type": "object",
                "required": ["expression"],
                "properties": {"expression": {"type": "string", "maxLength": 30}},
            },
        },
    },
]


def test_grammar_tool_call_parse_round_trips():
    args = {"city": "São Paulo", "unit": "celsius", "nested": {"list": [1, 2.5, None, True], "quote": 'a "b" \\ c'}}
    text = "Let me check.\n" + format_tool_call("get_weather", args) + "\n" + format_tool_call("calculator", "{}")
    content, calls = parse_tool_calls(text)
    assert content == "Let me check."
    assert [(c.name, c.arguments()) for c in calls] == [("get_weather", args), ("calculator", {})]
    assert len({c.id for c in calls}) == 2 and all(c.id.startswith("call_") for c in calls)
    assert calls[0].to_openai() == {
        "id": calls[0].id,
        "type": "function",
        "function": {"name": "get_weather", "arguments": calls[0].arguments_json},
    }
    # A rendered assistant turn with tool_calls carries the same blocks, so it parses back to the same calls.
    history = render_tool_prompt(
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [c.to_openai() for c in calls]},
            {"role": "tool", "tool_call_id": calls[0].id, "content": "21 C"},
            {"role": "tool", "tool_call_id": calls[1].id, "content": "0"},
        ],
        TOOLS,
        "none",
    )
    assert [m["role"] for m in history] == ["user", "assistant", "user"]
    assert [(c.name, c.arguments()) for c in parse_tool_calls(history[1]["content"])[1]] == [
        (c.name, c.arguments()) for c in calls
    ]
    assert history[2]["content"] == "<tool_response>\n21 C\n</tool_response>\n<tool_response>\n0\n</tool_response>"


@pytest.mark.parametrize(
    "text",
    [
        "no calls here",
        "<tool_call>\nnot json\n</tool_call>",
        '<tool_call>{"name": 3, "arguments": {}}</tool_call>',
        '<tool_call>{"name": "f", "arguments": [1]}</tool_call>',
        '<tool_call>{"name": "f", "arguments": {"a": 1',
    ],
)
def test_grammar_unparseable_blocks_stay_in_content(text):
    assert parse_tool_calls(text) == (text.strip(), [])


def test_grammar_tool_arguments_given_as_string_are_normalized():
    content, calls = parse_tool_calls('<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>')
    assert content == "" and calls[0].arguments_json == '{"a": 1}' and isinstance(calls[0], ToolCall)


def test_grammar_tool_prompt_and_choices():
    rendered = render_tool_prompt(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        TOOLS,
        {"type": "function", "function": {"name": "calculator"}},
    )
    system = rendered[0]["content"]
    assert system.startswith("Be brief.") and "<tools>" in system and "calculator" in system
    assert "get_weather" not in system and "You must call the function calculator." in system
    assert render_tool_prompt([{"role": "user", "content": "hi"}], TOOLS, "none") == [{"role": "user", "content": "hi"}]
    assert tool_call_grammar(TOOLS, "none") is None
    for bad_tools, choice in [
        ([], "auto"),
        ([{"type": "function", "function": {"name": "bad name"}}], "auto"),
        (TOOLS + TOOLS[:1], "auto"),
        (TOOLS, "sometimes"),
        (TOOLS, {"name": "missing"}),
    ]:
        with pytest.raises(EngineError):
            tool_call_grammar(bad_tools, choice)


def _chat(engine, text, choice, max_tokens):
    messages = render_tool_prompt([{"role": "user", "content": text}], TOOLS, choice)
    prompt = engine.apply_chat_template(messages)
    return generate(engine, {"t": prompt}, max_tokens=max_tokens, grammar=tool_call_grammar(TOOLS, choice))["t"]


def test_grammar_required_tool_call_on_smollm(engine):
    result = _chat(engine, "What is the weather in Paris, in celsius?", {"name": "get_weather"}, 60)
    assert result.reason == FinishReason.STOP
    content, calls = parse_tool_calls(result.text)
    assert content == "" and [c.name for c in calls] == ["get_weather"]
    jsonschema.validate(json.loads(calls[0].arguments_json), WEATHER)


def test_grammar_auto_lets_the_model_answer_in_text(engine):
    result = _chat(engine, "Hi! Tell me a joke about cats.", "auto", 24)
    content, calls = parse_tool_calls(result.text)
    assert calls == [] and content and "<tool_call>" not in result.text
    assert result.reason in (FinishReason.EOS, FinishReason.LENGTH)
