"""The OpenAI request bodies the gateway accepts, validated strictly, and turned into the kernel's call options.

Strict types (a string is not a number, a number not a bool), non-finite floats refused, every value bounded as the
protocol bounds it (ipc/messages.py) or tighter where OpenAI's own range is tighter (temperature 0..2): whatever a
client sends, a bad value is a 400 naming the field, never a frame the SDK cannot encode. Unknown fields are ignored
(clients send many optional ones); known ones the kernel cannot honour (n > 1, logprobs, echo, suffix, best_of,
non-text content) are refused with a 400 rather than silently ignored. response_format (json_object, json_schema)
goes to the kernel's constrained decoder, which refuses the schema keywords it cannot enforce (a 400 naming them).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ipc.messages import MAX_MESSAGES, MAX_STOP_CHARS, MAX_STOP_STRINGS, MAX_TOKENS_LIMIT, MAX_TOOLS, ResponseFormat
from kernel.gateway.errors import bad_request
from sdk.protocol import response_format

MAX_BODY_BYTES = 8 << 20  # twice the kernel's frame limit: a larger body cannot be a call the kernel takes

_Strict = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)
MaxTokens = Annotated[int, Field(ge=1, le=MAX_TOKENS_LIMIT)]
Stop = str | Annotated[list[Annotated[str, Field(max_length=MAX_STOP_CHARS)]], Field(max_length=MAX_STOP_STRINGS)]


class TextPart(BaseModel):
    model_config = _Strict
    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    model_config = _Strict
    name: str = Field(max_length=256)
    arguments: str


class ToolCallIn(BaseModel):
    model_config = _Strict
    id: str = Field(max_length=64)
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    model_config = _Strict
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCallIn] | None = Field(None, max_length=16)
    tool_call_id: str | None = Field(None, max_length=64)


class FunctionDef(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    name: str = Field(max_length=256)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolDef(BaseModel):
    model_config = _Strict
    type: Literal["function"]
    function: FunctionDef


class StreamOptions(BaseModel):
    model_config = _Strict
    include_usage: bool = False


class Sampling(BaseModel):
    model_config = _Strict
    model: str = Field(max_length=256)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=(1 << 63) - 1)
    stop: Stop | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(None, ge=1, le=1)
    user: str | None = None

    def options(self, max_tokens: int | None) -> dict:
        """The kernel call's options (only those given: the kernel's defaults stand for the rest)."""
        options: dict[str, Any] = {}
        if max_tokens is not None:
            options["max_tokens"] = max_tokens
        if self.temperature is not None:
            options["temperature"] = self.temperature
        if self.top_p is not None:
            options["top_p"] = self.top_p
        if self.seed is not None:
            options["seed"] = self.seed
        if self.stop is not None:
            options["stop"] = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        return options

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    tools: list[ToolDef] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["auto", "none", "required"] | dict[str, Any] | None = None
    logprobs: Literal[False] | None = None
    response_format: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None  # several calls in one answer only when asked for (see app.py)

    def kernel_messages(self) -> list[dict]:
        out = []
        for m in self.messages:
            content = m.content if isinstance(m.content, str) else "".join(p.text for p in m.content or ())
            message: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role, "content": content}
            if m.tool_calls:
                message["tool_calls"] = [c.model_dump() for c in m.tool_calls]
            if m.tool_call_id is not None:
                message["tool_call_id"] = m.tool_call_id
            out.append(message)
        return out

    def kernel_options(self) -> dict:
        options = self.options(self.max_completion_tokens or self.max_tokens)
        if self.tools:
            options["tools"] = [t.model_dump(exclude_none=True) for t in self.tools]
        if self.tool_choice is not None:
            options["tool_choice"] = self.tool_choice
        if self.parallel_tool_calls and self.tools:
            options["parallel_tool_calls"] = True
        if self.response_format is not None:
            options["response_format"] = kernel_response_format(self.response_format)
        return options

    @property
    def parses_tools(self) -> bool:
        """The kernel parses the model's output into tool calls (its final text has the calls' markup removed)."""
        return bool(self.tools) and self.tool_choice != "none"


class CompletionRequest(Sampling):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    max_tokens: MaxTokens | None = 16  # OpenAI's default for completions
    echo: Literal[False] | None = None
    suffix: None = None
    logprobs: None = None
    best_of: int | None = Field(None, ge=1, le=1)

    def kernel_prompt(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def kernel_options(self) -> dict:
        return self.options(self.max_tokens)


def kernel_response_format(spec: dict) -> ResponseFormat:
    """OpenAI's response_format as the kernel's, or a 400 (the kernel refuses schemas it cannot enforce, naming
    what it cannot, also a 400)."""
    try:
        return response_format(spec)
    except (ValueError, TypeError) as error:
        raise bad_request(f"response_format: {error}"[:300], "response_format") from None


def parse(model: type[BaseModel], body: bytes):
    """The request body as model, or a 400 naming the first offending field."""
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or None
        message = f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
        raise bad_request(message[:300], where) from None
