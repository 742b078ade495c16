"""The Responses API's request body (POST /v1/responses), validated strictly, and turned into a kernel chat call.

input is a string (one user message) or a list of items: messages ({"role", "content": text or input_text /
output_text parts}, with or without "type": "message"), the model's earlier function calls ({"type":
"function_call", "call_id", "name", "arguments"}) and their results ({"type": "function_call_output", "call_id",
"output"}). They become chat messages: instructions first as a system message, consecutive function calls one
assistant turn with tool_calls, each output a "tool" message. Reasoning items (a client echoing another model's
output back) carry nothing this kernel uses and are skipped. Tools are function tools, flat as the Responses API
writes them ({"type": "function", "name", "parameters"}); other tool types (web search, file search, ...) are refused
with a 400 naming the type. text.format carries structured output (as chat's response_format, flattened).
Bounds are chat's (schemas.py, ipc/messages.py).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ipc.messages import MAX_MESSAGES, MAX_STOP_CHARS, MAX_TOOLS
from kernel.gateway.errors import bad_request
from kernel.gateway.schemas import MaxTokens, kernel_response_format

_Strict = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


class ContentPart(BaseModel):
    model_config = _Strict
    type: Literal["input_text", "output_text", "text", "refusal"]
    text: str | None = None
    refusal: str | None = None


class InputItem(BaseModel):
    model_config = _Strict
    type: Literal["message", "function_call", "function_call_output", "reasoning"] | None = None
    role: Literal["system", "developer", "user", "assistant"] | None = None
    content: str | list[ContentPart] | None = None
    call_id: str | None = Field(None, max_length=64)
    name: str | None = Field(None, max_length=256)
    arguments: str | None = None
    output: str | list[ContentPart] | None = None


class FunctionTool(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    type: str
    name: str | None = Field(None, max_length=256)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class TextFormat(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(None, max_length=64)
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class TextOptions(BaseModel):
    model_config = _Strict
    format: TextFormat | None = None


class ResponsesRequest(BaseModel):
    model_config = _Strict
    model: str = Field(max_length=256)
    input: str | Annotated[list[InputItem], Field(max_length=MAX_MESSAGES)]
    instructions: str | None = None
    tools: list[FunctionTool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["auto", "none", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = Field(None, max_length=128)
    max_output_tokens: MaxTokens | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stream: bool | None = False
    store: bool | None = True
    text: TextOptions | None = None
    metadata: dict[str, str] | None = None
    user: str | None = Field(None, max_length=MAX_STOP_CHARS)

    def kernel_tools(self) -> list[dict]:
        tools = []
        for i, tool in enumerate(self.tools or ()):
            if tool.type != "function" or not tool.name:
                raise bad_request(
                    f"tools[{i}]: only function tools are supported, got {tool.type[:40]!r}", f"tools[{i}].type"
                )
            fn = {"name": tool.name, "parameters": tool.parameters or {"type": "object", "properties": {}}}
            if tool.description:
                fn["description"] = tool.description
            tools.append({"type": "function", "function": fn})
        return tools

    def kernel_tool_choice(self) -> Any:
        choice = self.tool_choice
        if isinstance(choice, dict):
            if choice.get("type") != "function" or not isinstance(choice.get("name"), str):
                raise bad_request(
                    'tool_choice must be "auto", "none", "required" or {"type": "function", "name": ...}', "tool_choice"
                )
            return {"type": "function", "function": {"name": choice["name"]}}
        return choice

    def kernel_options(self) -> dict:
        options: dict[str, Any] = {}
        if self.max_output_tokens is not None:
            options["max_tokens"] = self.max_output_tokens
        if self.temperature is not None:
            options["temperature"] = self.temperature
        if self.top_p is not None:
            options["top_p"] = self.top_p
        tools = self.kernel_tools()
        if tools:
            options["tools"] = tools
            if self.tool_choice is not None:
                options["tool_choice"] = self.kernel_tool_choice()
            if self.parallel_tool_calls:
                options["parallel_tool_calls"] = True
        fmt = self.text.format if self.text else None
        if fmt is not None and fmt.type != "text":
            spec = {"type": fmt.type}
            if fmt.type == "json_schema":
                spec["json_schema"] = {
                    "name": fmt.name or "response",
                    "schema": fmt.schema_ or {},
                    "strict": fmt.strict is not False,
                }
            options["response_format"] = kernel_response_format(spec)
        return options

    def new_messages(self) -> list[dict]:
        """This request's input as chat messages (without instructions and without the previous conversation)."""
        if isinstance(self.input, str):
            return [{"role": "user", "content": self.input}]
        out: list[dict] = []
        for i, item in enumerate(self.input):
            kind = item.type or ("message" if item.role else None)
            if kind == "message":
                if item.role is None:
                    raise bad_request(f"input[{i}]: a message needs a role", f"input[{i}].role")
                role = "system" if item.role == "developer" else item.role
                out.append({"role": role, "content": _text(item.content)})
            elif kind == "function_call":
                if not item.call_id or not item.name:
                    raise bad_request(f"input[{i}]: a function_call needs call_id and name", f"input[{i}]")
                call = {
                    "id": item.call_id,
                    "type": "function",
                    "function": {"name": item.name, "arguments": _arguments(item.arguments, i)},
                }
                if (
                    out
                    and out[-1]["role"] == "assistant"
                    and out[-1].get("tool_calls") is not None
                    and len(out[-1]["tool_calls"]) < 16
                ):
                    out[-1]["tool_calls"].append(call)
                else:
                    out.append({"role": "assistant", "content": "", "tool_calls": [call]})
            elif kind == "function_call_output":
                if not item.call_id:
                    raise bad_request(f"input[{i}]: a function_call_output needs call_id", f"input[{i}].call_id")
                out.append({"role": "tool", "tool_call_id": item.call_id, "content": _text(item.output)})
            elif kind != "reasoning":
                raise bad_request(f"input[{i}]: an item needs a type or a role", f"input[{i}]")
        return out


def _text(content: str | list[ContentPart] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(p.text or p.refusal or "" for p in content)


def _arguments(arguments: str | None, i: int) -> str:
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        raise bad_request(f"input[{i}]: function_call arguments are not JSON", f"input[{i}].arguments") from None
    if not isinstance(parsed, dict):
        raise bad_request(f"input[{i}]: function_call arguments must be a JSON object", f"input[{i}].arguments")
    return arguments or "{}"
