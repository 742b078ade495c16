"""Tools rendered into a chat's messages, before the chat template: render_tool_prompt(messages, tools, tool_choice).

SmolLM2's chat template (the default model's, in its GGUF) is plain ChatML with no tools section, so the tools go in
a system message in the Hermes / Qwen2.5 style models are commonly tuned on: signatures inside <tools></tools>, calls
as <tool_call>{"name": ..., "arguments": {...}}</tool_call> (tool_calls.py holds the format and its grammar). The
agent's own system message, if it has one, comes first and is kept.

The conversation's tool traffic is rewritten for a template that knows only role + content strings:
- an assistant message with "tool_calls" gets its calls as call blocks after its content (the same text the model
  writes, so a model sees its own past calls as it made them);
- a run of "tool" messages becomes one user message of <tool_response> blocks, as Qwen2.5's template renders them.
tool_choice "none" renders no tools (the history is still rewritten); "required" or a named function add one line
saying a call must be made, which the grammar enforces anyway.
"""

from __future__ import annotations

import json
from typing import Any

from kernel.engine.errors import EngineError
from kernel.engine.structured.tool_calls import CALL_CLOSE, CALL_OPEN, chosen_tool, format_tool_call, selected_tools

_INTRO = (
    "You are a function calling AI model. You are provided with function signatures within <tools></tools> XML "
    "tags. Don't make assumptions about what values to plug into functions. Here are the available tools:"
)
_FORMAT = (
    "For a function call, return a json object with the function name and arguments within "
    f"{CALL_OPEN}{CALL_CLOSE} XML tags:\n{CALL_OPEN}\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n' + CALL_CLOSE
)
_CHOICE = {
    "auto": "Call a function only when it helps; otherwise answer directly in plain text.",
    "required": "You must call one of these functions.",
}


def render_tool_prompt(messages: list[dict], tools: list[dict] | None, tool_choice: Any = "auto") -> list[dict]:
    """messages ready for the chat template: the tools' system message (unless tools is empty or tool_choice is
    "none") and the tool traffic rewritten as above. The input list and its dicts are left untouched."""
    if not isinstance(messages, list) or not messages:
        raise EngineError("messages must be a non-empty list")
    rendered = _rewrite_history(messages)
    functions = selected_tools(tools, tool_choice) if tools else []
    if not functions:
        return rendered
    name = chosen_tool(tool_choice)
    choice = f"You must call the function {name}." if name else _CHOICE[tool_choice]
    signatures = "\n".join(json.dumps({"type": "function", "function": f}, ensure_ascii=False) for f in functions)
    system = f"{_INTRO}\n<tools>\n{signatures}\n</tools>\n{choice}\n{_FORMAT}"
    if rendered[0].get("role") == "system":
        return [{**rendered[0], "content": f"{rendered[0]['content']}\n\n{system}"}, *rendered[1:]]
    return [{"role": "system", "content": system}, *rendered]


def _rewrite_history(messages: list[dict]) -> list[dict]:
    out: list[dict] = []
    responses: list[str] = []
    for message in messages:
        if not isinstance(message, dict):
            raise EngineError(f"each message must be a dict, got {message!r}")
        if message.get("role") == "tool":
            responses.append(f"<tool_response>\n{message_text(message.get('content'))}\n</tool_response>")
            continue
        if responses:
            out.append({"role": "user", "content": "\n".join(responses)})
            responses = []
        calls = message.get("tool_calls")
        if message.get("role") == "assistant" and calls:
            blocks = [_call_block(call) for call in calls]
            content = "\n".join(filter(None, [message_text(message.get("content")), *blocks]))
            out.append({"role": "assistant", "content": content})
        else:
            out.append(
                {k: v for k, v in message.items() if k != "tool_calls"}
                | {"content": message_text(message.get("content"))}
            )
    if responses:
        out.append({"role": "user", "content": "\n".join(responses)})
    return out


def _call_block(call: Any) -> str:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise EngineError(f'an assistant tool call must be {{"function": {{"name", "arguments"}}}}, got {call!r}')
    try:
        return format_tool_call(fn["name"], fn.get("arguments") or {})
    except ValueError as exc:
        raise EngineError(f"tool call {fn['name']!r}: arguments are not JSON: {exc}") from exc


def message_text(content: Any) -> str:
    """Message content as the template's string: None → "", OpenAI's [{"type": "text", "text"}] parts joined."""
    if content is None:
        return ""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    if not isinstance(content, str):
        raise EngineError(f"message content must be a string, got {type(content).__name__}")
    return content
