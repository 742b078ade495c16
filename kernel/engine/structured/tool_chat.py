"""A chat with tools made ready for a model: prepare_chat(tokenizer, messages, tools, tool_choice) -> ToolChat with the
prompt's token ids, the grammar the model's call must follow, and the format its reply is parsed with.

The format is the model's (tokenizer.tool_format, chosen from its chat template at load; tool_formats.py):
- native (QWEN, LLAMA3_JSON): the model's own template renders the tools (its tools section) and the conversation's
  tool traffic (assistant tool_calls, "tool" messages) as the model was trained on them. Messages are only normalized
  for it: OpenAI's content parts joined, a call's arguments given as a JSON string parsed into the object templates
  expect (they tojson it), an empty tool_calls list dropped (Llama's template branches on the key being present);
- GENERIC: tool_prompt.py puts the tools in a system message and rewrites the tool traffic into plain turns.
tool_choice "none" offers no tools (no tools section, no grammar) and the reply is not parsed for calls; "required"
or a named function is enforced by the grammar (a native template gets only the selected tools). parallel_tool_calls
lets a format that allows several calls in a row take them (QWEN); GENERIC and LLAMA3_JSON make one call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kernel.engine.errors import EngineError
from kernel.engine.structured.tool_calls import selected_tools
from kernel.engine.structured.tool_formats import GENERIC, ToolFormat
from kernel.engine.structured.tool_prompt import message_text, render_tool_prompt


@dataclass(frozen=True)
class ToolChat:
    prompt_ids: list[int]
    grammar: str | None  # tools offered: the call the model makes must follow it
    tool_format: ToolFormat | None  # parse the reply with it; None when no tools were offered


def prepare_chat(
    tokenizer,
    messages: list[dict],
    tools: list[dict] | None,
    tool_choice: Any = "auto",
    parallel_tool_calls: bool = True,
    grammar_choice: Any = None,
) -> ToolChat:
    """tokenizer: a TextTokenizer (apply_chat_template(messages, tools=...), tool_format), or anything with
    apply_chat_template(messages) (GENERIC then). grammar_choice: the tool_choice the grammar is built for when it is
    not the prompt's (a response format turns "auto" into "required" plus its JSON: response_format.py). EngineError
    on a malformed chat, tools or tool_choice (the caller's BAD_REQUEST)."""
    if not isinstance(messages, list) or not messages:
        raise EngineError("messages must be a non-empty list")
    fmt = getattr(tokenizer, "tool_format", GENERIC)
    offered = bool(tools) and tool_choice != "none"
    functions = selected_tools(tools, tool_choice) if offered else []
    choice = tool_choice if grammar_choice is None else grammar_choice
    grammar = fmt.grammar(selected_tools(tools, choice), choice, parallel_tool_calls) if functions else None
    if fmt.native:
        specs = [{"type": "function", "function": f} for f in functions]
        ids = tokenizer.apply_chat_template([_native(m) for m in messages], tools=specs or None)
    else:
        if offered or _has_tool_traffic(messages):
            messages = render_tool_prompt(messages, tools if offered else None, tool_choice)
        ids = tokenizer.apply_chat_template(messages)
    return ToolChat(ids, grammar, fmt if offered else None)


def _has_tool_traffic(messages: list[dict]) -> bool:
    return any(isinstance(m, dict) and (m.get("role") == "tool" or m.get("tool_calls")) for m in messages)


def _native(message: Any) -> dict:
    if not isinstance(message, dict):
        raise EngineError(f"each message must be a dict, got {message!r}")
    out = {k: v for k, v in message.items() if k != "tool_calls"}
    calls = message.get("tool_calls")
    if calls:
        if message.get("role") != "assistant" or not isinstance(calls, list):
            raise EngineError("only an assistant message carries tool_calls, as a list")
        out["tool_calls"] = [_native_call(c) for c in calls]
        out["content"] = None if message.get("content") is None else message_text(message["content"])
    else:
        out["content"] = message_text(message.get("content"))
    return out


def _native_call(call: Any) -> dict:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise EngineError(f'an assistant tool call must be {{"function": {{"name", "arguments"}}}}, got {call!r}')
    arguments = fn.get("arguments") or {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError as exc:
            raise EngineError(f"tool call {fn['name']!r}: arguments are not JSON: {exc}") from exc
    if not isinstance(arguments, dict):
        raise EngineError(f"tool call {fn['name']!r}: arguments must be a JSON object")
    return {**call, "type": "function", "function": {"name": fn["name"], "arguments": arguments}}
