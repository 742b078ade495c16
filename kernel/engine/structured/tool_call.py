"""One tool call the model made, as the kernel hands it on (OpenAI's shape), and the ids calls get."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments_json: str  # a JSON object, serialized

    def arguments(self) -> dict:
        return json.loads(self.arguments_json)

    def to_openai(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments_json}}


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)
