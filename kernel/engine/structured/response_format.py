"""Structured output: a chat's response_format as a grammar for the constrained decoder.

response_format_grammar(fmt, tool_grammar) -> grammar spec or None, EngineError (the caller's BAD_REQUEST) for a
schema the decoder cannot enforce:
- text (or none): no grammar of its own (tool_grammar, if any, stands);
- json_object: any JSON object; json_schema: exactly the JSON documents valid against the schema, compact as all
  generated JSON here (grammar.py). Every keyword must be one llguidance enforces: a schema using others (not,
  if/then/else, dependentSchemas, unevaluatedProperties, an unknown format, a remote $ref, ...) is refused naming
  them, never decoded as if they were absent, so the answer always validates. strict is accepted either way: the
  decoder is always strict.
With tools offered (tool_grammar given), the answer is a call or the structured text: a tool grammar whose start is
"calls" (tool_choice required or named) stays as it is; under "auto" its free-text alternative is replaced by the
schema's JSON (the tool grammar is rebuilt as for "required" by the caller, and the JSON added as an alternative).
"""

from __future__ import annotations

import json

from ipc.messages import ResponseFormat, ResponseFormatType
from kernel.engine.errors import EngineError
from kernel.engine.structured.grammar import json_schema_grammar, json_schema_lark

ANY_OBJECT = {"type": "object"}
MAX_SCHEMA_BYTES = 256 << 10  # a schema past this is not an answer shape but an attack on the compiler
_CALLS_START = "start: calls\n"


def response_schema(fmt: ResponseFormat | None) -> dict | bool | None:
    """The schema the answer must validate against, None when it is free text; EngineError if malformed."""
    if fmt is None:
        return None
    kind = ResponseFormatType(fmt.type)
    if kind is ResponseFormatType.TEXT:
        return None
    if kind is ResponseFormatType.JSON_OBJECT:
        return ANY_OBJECT
    if not isinstance(fmt.schema, (dict, bool)):
        raise EngineError("response_format json_schema needs a schema (a JSON schema object)")
    try:
        size = len(json.dumps(fmt.schema, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise EngineError(f"response_format schema is not JSON: {exc}") from None
    except RecursionError:  # a hostile nesting depth: the caller's bad request, not a kernel failure
        raise EngineError("response_format schema is nested too deeply") from None
    if size > MAX_SCHEMA_BYTES:
        raise EngineError(f"response_format schema is {size} bytes, over {MAX_SCHEMA_BYTES}")
    return fmt.schema


def response_format_grammar(fmt: ResponseFormat | None, tool_grammar: str | None = None) -> str | None:
    """The grammar the answer must follow (see the module docstring); tool_grammar: the tools' grammar under
    "required" or a named tool_choice, or None when no tools are offered."""
    schema = response_schema(fmt)
    if schema is None:
        return tool_grammar
    check_schema(schema)
    if tool_grammar is None:
        return json_schema_grammar(schema)
    if not tool_grammar.startswith(_CALLS_START):
        raise EngineError("response_format cannot be combined with this tool grammar")
    return (
        f"start: calls | response_json\nresponse_json: {json_schema_lark(schema)}\n" + tool_grammar[len(_CALLS_START) :]
    )


def check_schema(schema: dict | bool) -> None:
    """EngineError naming what in schema the decoder cannot enforce (llguidance's own diagnosis: it names the
    unimplemented keys, unknown formats and unresolvable references)."""
    import llguidance

    grammar = json_schema_grammar(schema)
    failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if failed or messages:
        raise EngineError(
            "response_format schema uses what structured output cannot enforce: " + "; ".join(messages)[:400]
        )
