"""OpenAI-style tool calls on the engine side: the tools and tool_choice checked, the grammar that makes the model's
call well-formed, the model's text parsed back into calls.

Wire format (Hermes / Qwen2.5 style, what tool_prompt.py teaches the model):

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

parse_tool_calls(text) -> (content, [ToolCall]): every call block whose JSON has a string "name" and an object
"arguments" becomes a ToolCall (arguments re-serialized, so they always parse); anything else stays in the content.
"""
from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from kernel.engine.structured.grammar import json_schema_lark, lark_grammar
from kernel.engine.core.interface import EngineError

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
TOOL_CHOICES = ("auto", "required", "none")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")                 # OpenAI's rule for function names
_BLOCK = re.compile(re.escape(CALL_OPEN) + r"\s*(.*?)\s*(?:" + re.escape(CALL_CLOSE) + r"|\Z)", re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments_json: str               # a JSON object, serialized

    def arguments(self) -> dict:
        return json.loads(self.arguments_json)

    def to_openai(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments_json}}


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


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
    raise EngineError('tool_choice must be "auto", "required", "none" or {"type": "function", "function": '
                      '{"name": ...}}')


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


# ---- the grammar ---------------------------------------------------------------------------------------------------
def tool_call_grammar(tools: list[dict], tool_choice: Any = "auto") -> str | None:
    functions = selected_tools(tools, tool_choice)
    if not functions:
        return None
    rules = [f'tool_call: {_lit(CALL_OPEN + chr(10))} call {_lit(chr(10) + CALL_CLOSE)}',
             "call: " + " | ".join(f"call_{i}" for i in range(len(functions)))]
    for i, fn in enumerate(functions):
        rules.append(f'call_{i}: {_lit("{" + chr(34) + "name" + chr(34) + ":" + json.dumps(fn["name"]) + ",")}'
                     f' {_lit(chr(34) + "arguments" + chr(34) + ":")} args_{i} "}}"')
        rules.append(f"args_{i}: {json_schema_lark(fn['parameters'])}")
    if tool_choice == "auto":
        # Free text is any non-empty text without the call marker: once "<tool_call>" is written, the call rule is
        # the only way on, and it is constrained.
        start = ["start: tool_call | TEXT",
                 "TEXT: /(.|\\n)+/ & ~/(.|\\n)*" + re.escape(CALL_OPEN).replace("/", "\\/") + "(.|\\n)*/"]
    else:
        start = ["start: tool_call"]
    return lark_grammar("\n".join(start + rules) + "\n")


def _lit(text: str) -> str:
    """text as a Lark string literal (JSON's escapes are Lark's)."""
    return json.dumps(text)


# ---- parsing -------------------------------------------------------------------------------------------------------
def format_tool_call(name: str, arguments: dict | str) -> str:
    """One call block, exactly as the grammar makes the model write it (used to render an assistant's past calls)."""
    if isinstance(arguments, str):
        arguments = json.loads(arguments)
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False, separators=(",", ":"))
    return f"{CALL_OPEN}\n{body}\n{CALL_CLOSE}"


def parse_tool_calls(text: str) -> tuple[str, list[ToolCall]]:
    calls: list[ToolCall] = []
    kept: list[str] = []
    last = 0
    for match in _BLOCK.finditer(text):
        call = _parse_call(match.group(1))
        if call is None:
            continue                                     # not a call: stays in the content as written
        kept.append(text[last:match.start()])
        last = match.end()
        calls.append(call)
    kept.append(text[last:])
    return "".join(kept).strip(), calls


def _parse_call(body: str) -> ToolCall | None:
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(arguments, str):                       # some models send the arguments already serialized
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ToolCall(new_call_id(), obj["name"], json.dumps(arguments, ensure_ascii=False))
