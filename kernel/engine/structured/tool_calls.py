"""OpenAI-style tool calls on the engine side: the tools and tool_choice checked, the grammar that makes the model's
call well-formed, the model's text parsed back into calls.

The functions below speak the generic format (tool_formats.GENERIC); a model whose chat template has its own tools
section has its own format (tool_formats.py; tool_chat.prepare_chat picks it). Generic wire format (Hermes / Qwen2.5
style, what tool_prompt.py teaches the model):

    <tool_call>
    {"name":"get_weather","arguments":{"city":"Paris"}}
    </tool_call>

tool_call_grammar(tools, tool_choice) -> grammar spec for SamplingParams.grammar, or None:
- "required": exactly one call block whose "name" is one of the tools and whose "arguments" is a JSON document valid
  against that tool's parameters schema (each tool is one alternative: name literal, then its schema's %json rule);
- {"type": "function", "function": {"name": N}} (or {"name": N}): the same with tool N alone;
- "auto": either that call block or free text that never contains "<tool_call>" (so a call is always constrained);
  the model picks at its first token. Text followed by a call in one answer is not offered;
- "none": no grammar (the prompt carries no tools either).
A constrained sequence ends (STOP) right after "</tool_call>". It can still end early at max_tokens: the caller
should allow enough tokens for the arguments it expects.

parse_tool_calls(text, tool_format) -> (content, [ToolCall]): every call block whose JSON has a string "name" and an
object "arguments" becomes a ToolCall (arguments re-serialized, so they always parse); anything else stays in the
content. tool_format is the model's (default GENERIC).
"""

from __future__ import annotations

import re
from typing import Any

from kernel.engine.errors import EngineError
from kernel.engine.structured.tool_call import ToolCall, new_call_id
from kernel.engine.structured.tool_formats import GENERIC, ToolFormat

__all__ = [
    "CALL_OPEN",
    "CALL_CLOSE",
    "TOOL_CHOICES",
    "ToolCall",
    "new_call_id",
    "check_tools",
    "chosen_tool",
    "selected_tools",
    "tool_call_grammar",
    "format_tool_call",
    "parse_tool_calls",
]

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
TOOL_CHOICES = ("auto", "required", "none")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names


# ---- checking what the caller sent -----------------------------------------------------------------------------------
def check_tools(tools: Any) -> list[dict]:
    """tools as [{"name", "description", "parameters"}] (OpenAI's function objects, unwrapped); EngineError if the
    list is malformed or names repeat."""
    if not isinstance(tools, list) or not tools:
        raise EngineError("tools must be a non-empty list")
    functions, seen = [], set()
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) and tool.get("type", "function") == "function" else None
        if not isinstance(fn, dict):
            raise EngineError('each tool must be {"type": "function", "function": {"name": ..., "parameters": ...}}')
        name, params = fn.get("name"), fn.get("parameters", {"type": "object"})
        if not isinstance(name, str) or not _NAME.match(name):
            raise EngineError(f"tool name must match [A-Za-z0-9_-]{{1,64}}, got {name!r}")
        if name in seen:
            raise EngineError(f"tool {name!r} is defined twice")
        if not isinstance(params, dict):
            raise EngineError(f"tool {name!r}: parameters must be a JSON schema object")
        seen.add(name)
        functions.append({"name": name, "description": str(fn.get("description") or ""), "parameters": params})
    return functions


def chosen_tool(tool_choice: Any) -> str | None:
    """The function name a named tool_choice forces, None for the string choices; EngineError if malformed."""
    if isinstance(tool_choice, str):
        if tool_choice not in TOOL_CHOICES:
            raise EngineError(f"tool_choice must be one of {TOOL_CHOICES} or a function, got {tool_choice!r}")
        return None
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function", tool_choice)
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return fn["name"]
    raise EngineError(
        'tool_choice must be "auto", "required", "none" or {"type": "function", "function": {"name": ...}}'
    )


def selected_tools(tools: list[dict], tool_choice: Any) -> list[dict]:
    """The (checked) functions a call may name under tool_choice: all, the named one, or none."""
    functions = check_tools(tools)
    name = chosen_tool(tool_choice)
    if tool_choice == "none":
        return []
    if name is None:
        return functions
    named = [f for f in functions if f["name"] == name]
    if not named:
        raise EngineError(f"tool_choice names {name!r}, which is not among the tools")
    return named


# ---- the grammar and the parser (generic format) ------------------------------------------------------------------
def tool_call_grammar(
    tools: list[dict], tool_choice: Any = "auto", parallel_tool_calls: bool = False, tool_format: ToolFormat = GENERIC
) -> str | None:
    """The grammar for tools under tool_choice: one call (several in a row with parallel_tool_calls where the format
    allows them), or free text under "auto"; None for "none"."""
    return tool_format.grammar(selected_tools(tools, tool_choice), tool_choice, parallel_tool_calls)


def format_tool_call(name: str, arguments: dict | str, tool_format: ToolFormat = GENERIC) -> str:
    """One call block, exactly as the grammar makes the model write it (used to render an assistant's past calls)."""
    return tool_format.format_call(name, arguments)


def parse_tool_calls(text: str, tool_format: ToolFormat | None = None) -> tuple[str, list[ToolCall]]:
    return (tool_format if isinstance(tool_format, ToolFormat) else GENERIC).parse(text)
