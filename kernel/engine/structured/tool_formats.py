"""Tool-call formats as data: how a model family writes a call, the grammar that makes it write one well-formed, the
parser that reads it back. One format per model, chosen from its chat template at load (tool_format_for).

- GENERIC (Hermes style; any template without a tools section, e.g. SmolLM2's ChatML): the kernel's own tool prompt
  (tool_prompt.py) teaches it; a call is `<tool_call>\\n{"name":"f","arguments":{...}}\\n</tool_call>`, compact JSON
  (see grammar.py on why compact for small models). One call per answer: allowed several under "required" (4
  questions, 2 asking two things), SmolLM2 (the default model) called twice for a one-city question and ran into
  max_tokens inside a second call once; allowed one, all 4 answers end right after their call.
- QWEN (a template with a tools section that speaks `<tool_call>`: Qwen2.5, Qwen3, Hermes 2/3): the template renders
  the tools; a call is `<tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>` spaced as the template's tojson
  renders past calls, which is the text the model was trained on. Several calls in a row, one per line.
- LLAMA3_JSON (a template with Llama 3.1/3.2/3.3's custom-tool prompt, 'Respond in the format {"name": function name,
  "parameters": ...}'): the whole answer is one JSON object `{"name": "f", "parameters": {...}}`, one call per turn
  (the template itself refuses an assistant turn with several).
A template that takes tools in a format not listed here (Mistral's [TOOL_CALLS], ...) gets GENERIC: the model then
sees one consistent format, ours, rather than its own tools section with a grammar that forbids its own calls.

grammar(functions, tool_choice, parallel): a call's "name" is one of functions and its arguments validate against that
function's schema (one alternative per function: name literal, then the schema's %json rule). "auto" also allows free
text that cannot start a call (no call marker; for LLAMA3_JSON, text that does not begin with "{"), and for QWEN text
followed by calls (the text ends at the first "<tool_call>": Qwen models often say a line first, Qwen3 thinks first;
the generic format keeps one or the other, which suits the small default model better). parallel allows
several calls where the format does (parallel_tool_calls); otherwise exactly one.
parse(text) -> (content, [ToolCall]): each well-formed call becomes a ToolCall; anything else stays in the content.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from kernel.engine.structured.grammar import json_schema_lark, lark_grammar
from kernel.engine.structured.tool_call import ToolCall, new_call_id


class ToolStyle(Enum):
    GENERIC = "generic"
    QWEN = "qwen"
    LLAMA3_JSON = "llama3_json"


@dataclass(frozen=True)
class ToolFormat:
    style: ToolStyle
    native: bool  # the model's template renders the tools and the past calls (else tool_prompt.py does)
    open: str  # text before one call's JSON ("" for a bare JSON call)
    close: str  # text after it
    between: str  # text between two calls in a row
    arguments_key: str
    item_separator: str  # JSON separators of the call, as the model writes them
    key_separator: str
    parallel: bool  # several calls in one answer
    text_before_calls: bool = False  # under "auto", text may come before the calls (Qwen writes so; Qwen3 thinks)

    # ---- writing ---------------------------------------------------------------------------------------------------
    def format_call(self, name: str, arguments: dict | str) -> str:
        """One call, exactly as the grammar makes the model write it."""
        if isinstance(arguments, str):
            arguments = json.loads(arguments)
        args = _dumps(arguments, (self.item_separator, self.key_separator))
        return f"{self.open}{self._head(name)}{args}}}{self.close}"

    def _head(self, name: str) -> str:
        k, i = self.key_separator, self.item_separator
        return f'{{"name"{k}{_dumps(name, (i, k))}{i}"{self.arguments_key}"{k}'

    # ---- the grammar -----------------------------------------------------------------------------------------------
    def grammar(self, functions: list[dict], tool_choice: Any = "auto", parallel: bool = True) -> str | None:
        """functions: checked ones (tool_calls.selected_tools). None when there are none."""
        if not functions:
            return None
        several = parallel and self.parallel
        rules = [
            f"calls: tool_call ({_lit(self.between)} tool_call)*" if several else "calls: tool_call",
            "tool_call: "
            + " ".join(
                filter(None, [_lit(self.open) if self.open else "", "call", _lit(self.close) if self.close else ""])
            ),
            "call: " + " | ".join(f"call_{i}" for i in range(len(functions))),
        ]
        for i, fn in enumerate(functions):
            rules.append(f'call_{i}: {_lit(self._head(fn["name"]))} args_{i} "}}"')
            rules.append(f"args_{i}: {json_schema_lark(fn['parameters'], self.item_separator, self.key_separator)}")
        if tool_choice == "auto":
            # Free text is any non-empty text that cannot begin a call: once a call starts, only the call rule goes
            # on, and it is constrained.
            start = ["start: calls | TEXT", f"TEXT: /(.|\\n)+/ & ~/{self._call_start_regex()}/"]
            if self.text_before_calls:
                # Or text, then calls: the text is lazy and ends at the first call marker (its suffix, which the
                # model writes), after which the calls are constrained as above.
                start[0] += " | lead calls_after"
                start += [
                    f"lead[suffix={_lit(self.open)}]: /(.|\\n)*/",
                    "calls_after: call "
                    + _lit(self.close)
                    + (f" ({_lit(self.between)} tool_call)*" if several else ""),
                ]
        else:
            start = ["start: calls"]
        return lark_grammar("\n".join(start + rules) + "\n")

    def _call_start_regex(self) -> str:
        if self.open:
            return "(.|\\n)*" + re.escape(self.open.strip()).replace("/", "\\/") + "(.|\\n)*"
        return "\\s*\\{(.|\\n)*"

    # ---- parsing ---------------------------------------------------------------------------------------------------
    def parse(self, text: str) -> tuple[str, list[ToolCall]]:
        if not self.open:
            return _parse_bare_json(text)
        block = re.compile(
            re.escape(self.open.strip()) + r"\s*(.*?)\s*(?:" + re.escape(self.close.strip()) + r"|\Z)", re.DOTALL
        )
        calls: list[ToolCall] = []
        kept: list[str] = []
        last = 0
        for match in block.finditer(text):
            call = _parse_call(match.group(1))
            if call is None:
                continue  # not a call: stays in the content as written
            kept.append(text[last : match.start()])
            last = match.end()
            calls.append(call)
        kept.append(text[last:])
        return "".join(kept).strip(), calls


GENERIC = ToolFormat(
    ToolStyle.GENERIC,
    native=False,
    open="<tool_call>\n",
    close="\n</tool_call>",
    between="\n",
    arguments_key="arguments",
    item_separator=",",
    key_separator=":",
    parallel=False,
)
QWEN = ToolFormat(
    ToolStyle.QWEN,
    native=True,
    open="<tool_call>\n",
    close="\n</tool_call>",
    between="\n",
    arguments_key="arguments",
    item_separator=", ",
    key_separator=": ",
    parallel=True,
    text_before_calls=True,
)
LLAMA3_JSON = ToolFormat(
    ToolStyle.LLAMA3_JSON,
    native=True,
    open="",
    close="",
    between="",
    arguments_key="parameters",
    item_separator=", ",
    key_separator=": ",
    parallel=False,
)
FORMATS = {f.style: f for f in (GENERIC, QWEN, LLAMA3_JSON)}

# What marks a template's tools section as one of ours: its call format, in the template's own words.
_QWEN_MARK = "<tool_call>"
_LLAMA3_MARK = '"parameters": dictionary of argument name and its value'


def tool_format_for(template) -> ToolFormat:
    """The format of a ChatTemplate (or None: no template); GENERIC unless it renders tools in a format we know."""
    if template is None or not template.takes_tools:
        return GENERIC
    if _QWEN_MARK in template.source:
        return QWEN
    if _LLAMA3_MARK in template.source:
        return LLAMA3_JSON
    return GENERIC


def _lit(text: str) -> str:
    """text as a Lark string literal (JSON's escapes are Lark's)."""
    return json.dumps(text)


_PYTHON_TAG = "<|python_tag|>"  # Llama 3.x may open a JSON call with it (decoded text keeps it only if not skipped)


def _parse_bare_json(text: str) -> tuple[str, list[ToolCall]]:
    body = text.strip()
    if body.startswith(_PYTHON_TAG):
        body = body[len(_PYTHON_TAG) :].strip()
    call = _parse_call(body) if body.startswith("{") else None
    return ("", [call]) if call is not None else (text.strip(), [])


def _parse_call(body: str) -> ToolCall | None:
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(arguments, str):  # some models send the arguments already serialized
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ToolCall(new_call_id(), obj["name"], json.dumps(arguments, ensure_ascii=False))


def _dumps(value: Any, separators: tuple[str, str]) -> str:
    """JSON as the grammar's JSON lexer writes it: non-ASCII kept, DEL (U+007F) escaped, which json.dumps leaves raw
    and the lexer refuses in a string (the same value either way)."""
    return json.dumps(value, ensure_ascii=False, separators=separators).replace("\x7f", "\\u007f")
