"""Tool calls seen as they are generated: CallWatch(tool_format).feed(text_delta) -> [ClosedCall] for each call whose
arguments object the model has just finished writing, while only the call's end markup is left to generate.

A constrained tool call (tool_formats.py) is written `<open>{"name":N,"<arguments key>":{...}}<close>`, the name
first and the arguments object last, so once the arguments object closes the rest of the call is fixed by the
grammar ("}" and the close markup). The watch scans the output text once, as it arrives (each character once, whatever
the deltas' boundaries): outside a call it looks for the format's open marker (for a bare JSON format, LLAMA3_JSON,
an answer whose first character, after an optional <|python_tag|>, is "{"); inside one it tracks JSON nesting and
strings. When the arguments object closes (nesting back to the call object's level) the call's JSON is completed
with its "}" and parsed; a call whose arguments are not an object is reported when the call object itself closes.

Inputs: text deltas of one sequence, in order. Outputs: each call at most once, as (name, arguments dict), in the
order written. It never raises on text: what does not parse as a call (a non-constrained answer that merely looks
like one, a cut-off call) yields nothing. Under "auto" the grammar keeps free text from containing a call marker
(tool_formats.py), so a marker in the text opens a call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum

from kernel.engine.structured.tool_formats import ToolFormat

PYTHON_TAG = "<|python_tag|>"  # Llama 3.x may open its bare JSON call with it


@dataclass(frozen=True)
class ClosedCall:
    name: str
    arguments: dict


class _State(Enum):
    SEARCH = "search"  # before a call: looking for its start
    CALL = "call"  # inside a call's JSON
    DONE = "done"  # no (further) call can come: a bare JSON answer that is text, or its one call ended


class CallWatch:
    def __init__(self, tool_format: ToolFormat):
        self.format = tool_format
        self._marker = tool_format.open
        self._text = ""
        self._pos = 0  # characters of _text already scanned
        self._state = _State.SEARCH
        self._start = 0  # where the current call's JSON begins
        self._depth = 0
        self._in_string = self._escape = False
        self._reported = False  # the current call was reported when its arguments closed

    def feed(self, delta: str) -> list[ClosedCall]:
        """The calls whose arguments closed within delta."""
        if not delta or self._state is _State.DONE:
            return []
        self._text += delta
        calls: list[ClosedCall] = []
        while self._pos < len(self._text) and self._state is not _State.DONE:
            if self._state is _State.SEARCH:
                if not self._find_start():
                    break
            else:
                call = self._scan_call()
                if call is not None:
                    calls.append(call)
        return calls

    def _find_start(self) -> bool:
        """Move to the next call's JSON if its start is in the text; False to wait for more text."""
        if self._marker:
            # A marker may straddle deltas: search again from where a partial one could have begun.
            found = self._text.find(self._marker, max(0, self._pos - len(self._marker) + 1))
            if found < 0:
                self._pos = len(self._text)
                return False
            self._begin(found + len(self._marker))
            return True
        head = self._text.lstrip()
        if head.startswith(PYTHON_TAG):
            head = head[len(PYTHON_TAG) :].lstrip()
        elif PYTHON_TAG.startswith(head):  # empty, or a tag still arriving
            self._pos = len(self._text)
            return False
        if not head:
            self._pos = len(self._text)
            return False
        if head[0] != "{":
            self._state = _State.DONE  # a text answer: the bare format makes no call after text
            return False
        self._begin(len(self._text) - len(head))
        return True

    def _begin(self, start: int) -> None:
        self._state, self._start, self._pos = _State.CALL, start, start
        self._depth, self._in_string, self._escape, self._reported = 0, False, False, False

    def _scan_call(self) -> ClosedCall | None:
        """Scan the current call's characters until a call is complete (returned) or the text runs out."""
        text = self._text
        while self._pos < len(text):
            char = text[self._pos]
            self._pos += 1
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif char == "\\":
                    self._escape = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 1 and char == "}" and not self._reported:
                    call = self._parse(text[self._start : self._pos] + "}")
                    if call is not None:
                        self._reported = True
                        return call
                elif self._depth <= 0:
                    call = None if self._reported else self._parse(text[self._start : self._pos])
                    self._end_call()
                    return call
            elif self._depth == 0 and not char.isspace():
                self._state = _State.DONE  # not JSON where the call should be
                return None
        return None

    def _end_call(self) -> None:
        # Formats with one call per answer make no further call; the others may write another.
        self._state = _State.SEARCH if (self._marker and self.format.parallel) else _State.DONE

    def _parse(self, text: str) -> ClosedCall | None:
        try:
            obj = json.loads(text)
        except ValueError:
            return None
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return None
        arguments = obj.get(self.format.arguments_key)
        if not isinstance(arguments, dict):
            return None
        return ClosedCall(obj["name"], arguments)
