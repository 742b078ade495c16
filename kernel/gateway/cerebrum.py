"""POST /query: the AIOS SDK's (Cerebrum, `aios-agent-sdk` on PyPI) kernel route, so its agents run against this
kernel by pointing their base_url at the gateway.

Cerebrum's client posts {"query_type", "agent_name", "query_data"}; the installed SDK (0.0.3) sends query_type
"llm" with query_data {"messages", "tools", "action_type": "chat" | "tool_use" | "operate_file",
"message_return_type"}. It becomes one llm.chat of the key's agent (agent_name is the SDK's label; who the call runs
as is the key, as for every route): "chat" and "operate_file" a plain chat (tools offered under "auto" if given),
"tool_use" a chat whose tools the model must call (tool_choice "required"). The answer is AIOS's shape:
{"response": {"response_message", "tool_calls": [{"id", "name", "parameters"}] or null, "finished": true}}.
message_return_type "json" constrains the text to a JSON object (structured output). Other query types (the later
SDK's memory, storage and tool queries) are refused with a 400 naming the type, not answered wrongly.
Cerebrum sends no key: with a keys file, its requests must carry one (Authorization), else the gateway is keyless.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ipc.messages import MAX_MESSAGES, MAX_TOOLS
from kernel.gateway.errors import APIError, bad_request
from kernel.gateway.schemas import ToolDef, kernel_response_format, parse
from kernel.gateway.streaming import until_disconnected

MAX_TOKENS = 512  # Cerebrum sends no limit; its kernel's default is the layer's max_new_tokens


class LLMQueryData(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    messages: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_MESSAGES)
    tools: list[ToolDef] | None = Field(None, max_length=MAX_TOOLS)
    action_type: Literal["chat", "tool_use", "operate_file"] = "chat"
    message_return_type: str = Field("text", max_length=32)


class QueryRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    query_type: str = Field(max_length=32)
    agent_name: str = Field("agent", max_length=256)
    query_data: dict[str, Any]


def install(
    app: FastAPI, agent_for: Callable, options_for: Callable, read_body: Callable[[Request], Awaitable]
) -> None:
    @app.post("/query")
    async def query(request: Request) -> JSONResponse:
        body = parse(QueryRequest, await read_body(request))
        if body.query_type != "llm":
            raise bad_request(f"query_type {body.query_type!r} is not served here (only 'llm')", "query_type")
        try:
            data = parse(LLMQueryData, json.dumps(body.query_data).encode())
        except APIError as error:
            raise bad_request(f"query_data.{error.message}", f"query_data.{error.param}") from None
        entry, kernel = await agent_for(request)
        options: dict[str, Any] = {"max_tokens": MAX_TOKENS, **options_for(request, entry)}
        if data.tools:
            options["tools"] = [t.model_dump(exclude_none=True) for t in data.tools]
            options["tool_choice"] = "required" if data.action_type == "tool_use" else "auto"
        elif data.action_type == "tool_use":
            raise bad_request("action_type tool_use needs tools", "query_data.tools")
        if data.message_return_type == "json" and not data.tools:
            options["response_format"] = kernel_response_format({"type": "json_object"})
        completion = await until_disconnected(request, kernel.chat(_messages(data.messages), full=True, **options))
        calls = [{"id": c.id, "name": c.name, "parameters": json.loads(c.arguments)} for c in completion.tool_calls]
        return JSONResponse(
            {
                "response": {
                    "response_message": completion.text if not calls else None,
                    "tool_calls": calls or None,
                    "finished": True,
                }
            }
        )


def _messages(messages: list[dict[str, Any]]) -> list[dict]:
    """Cerebrum's messages ({"role", "content"}, content a string) as the kernel's."""
    out = []
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if role not in ("system", "user", "assistant", "tool") or not isinstance(content, str):
            raise bad_request(
                f"query_data.messages[{i}]: needs a role (system, user, assistant, tool) and text content",
                f"query_data.messages[{i}]",
            )
        out.append({"role": role, "content": content})
    return out
