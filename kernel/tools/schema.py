"""Arguments against a tool's JSON schema, and the arguments the kernel fills in itself (the context seam).

A server's tool may declare that an argument comes from the kernel, not from the agent, by marking its property in
the input schema with `"x-aios-context": "<key>"` (with FastMCP/MCPServer:
`space: Annotated[str, Field(json_schema_extra={"x-aios-context": "space"})] = ""`). Then:
- the property is removed from the schema agents see (ToolSpec.input_schema) and from its `required` list;
- an agent that passes it anyway is refused (BAD_REQUEST): it cannot name another agent's space;
- on each call the manager copies `context[key]` (what the kernel knows of the caller, e.g. {"space": "uid:0/notes",
  "agent_id": "a3"}) into the argument, if the server's config lists `key` in `context`; a server not granted a key
  it asks for, or a call whose context lacks it, fails (INTERNAL: a configuration fault, not the agent's).

Validation uses the `jsonschema` library (a dependency of `mcp`) with the schema's own draft (2020-12 by default), on
the visible schema, before the server sees the call.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import jsonschema

from ipc.errors import ErrorCode, ProtocolError

CONTEXT_MARK = "x-aios-context"


@dataclass(frozen=True)
class ToolSchema:
    visible: dict  # what agents see and what arguments are checked against
    injected: dict[str, str]  # argument name → context key
    validator: object | None  # None: the server's schema was itself invalid (every call refused)
    problem: str = ""

    def check(self, tool: str, arguments: dict) -> None:
        """BAD_REQUEST unless the agent's arguments are valid for the visible schema."""
        if not isinstance(arguments, dict):
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"arguments of {tool} must be an object")
        spoofed = sorted(set(arguments) & set(self.injected))
        if spoofed:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"{tool}: argument {spoofed[0]!r} is set by the kernel")
        if self.validator is None:
            raise ProtocolError(ErrorCode.INTERNAL, f"{tool}: the server's input schema is invalid: {self.problem}")
        error = jsonschema.exceptions.best_match(self.validator.iter_errors(arguments))
        if error is not None:
            where = "/".join(str(part) for part in error.absolute_path) or "arguments"
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"{tool}: {where}: {error.message}")

    def inject(self, tool: str, arguments: dict, context: dict, granted: list[str]) -> dict:
        """The arguments to send: the agent's plus the kernel's context values."""
        if not self.injected:
            return arguments
        full = dict(arguments)
        for name, key in self.injected.items():
            if key not in granted:
                raise ProtocolError(ErrorCode.INTERNAL, f"{tool} asks for context {key!r}, not granted to its server")
            if key not in context:
                raise ProtocolError(ErrorCode.INTERNAL, f"{tool} needs context {key!r}, which the kernel did not pass")
            full[name] = context[key]
        return full


def compile_schema(input_schema: dict | None) -> ToolSchema:
    schema = copy.deepcopy(input_schema) if isinstance(input_schema, dict) else {"type": "object"}
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    injected = {
        name: prop[CONTEXT_MARK]
        for name, prop in properties.items()
        if isinstance(prop, dict) and isinstance(prop.get(CONTEXT_MARK), str)
    }
    for name in injected:
        del properties[name]
    if injected and isinstance(schema.get("required"), list):
        schema["required"] = [name for name in schema["required"] if name not in injected]
    try:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)
        return ToolSchema(schema, injected, cls(schema))
    except jsonschema.exceptions.SchemaError as error:
        return ToolSchema(schema, injected, None, error.message[:200])
