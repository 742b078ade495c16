"""Tool calls streamed while the model writes them: the kernel's raw text deltas of a chat that offered tools, turned
into content deltas or call deltas (a call's id and name first, then its arguments in fragments), as OpenAI streams
them. Chat completions and the Responses API both render these deltas (app.py, responses.py).

The kernel's grammar (kernel/engine/structured/tool_formats.py) makes the model write either free text that never
contains the call marker, or calls `<tool_call>\\n{"name":"f","arguments":{...}}\\n</tool_call>` (several in a row,
one per line, under parallel_tool_calls), so the raw text decides early and unambiguously: the first characters
either can still begin "<tool_call>" (wait) or cannot (all of it is content). In a call, the head up to the
arguments gives the name; the arguments are the text up to the "}" that closes the call's object before its closing
marker. Text that might still be that closing "}" (from the last "}" on) is held back until the next delta shows
whether it is. The fragments concatenate to the arguments exactly as the model wrote them (compact JSON; the kernel's
final Completion re-serializes the same object, which the unstreamed answer carries).

At the end, finish(completion) flushes what was held back and reconciles with the kernel's parse: calls the stream
did not recognise (a format this parser does not know) are sent whole, so nothing the kernel parsed is lost.
One ToolDeltas per streamed answer; not thread-safe (one asyncio task feeds it).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from enum import Enum

from ipc.messages import Completion

OPEN = "<tool_call>"
MAX_HEAD_CHARS = 400  # a call head longer than this is not one this parser reads: wait for the end instead
_HEAD = re.compile(
    r'\s*<tool_call>\s*\{\s*"name"\s*:\s*"([A-Za-z0-9_-]{1,64})"\s*,\s*"(?:arguments|parameters)"\s*:\s*'
)
_TAIL = re.compile(r"\}\s*</tool_call>")


@dataclass(frozen=True)
class ContentDelta:
    text: str


@dataclass(frozen=True)
class CallStart:
    index: int
    id: str
    name: str


@dataclass(frozen=True)
class ArgumentsDelta:
    index: int
    text: str


Delta = ContentDelta | CallStart | ArgumentsDelta


class _Mode(Enum):
    UNDECIDED = "undecided"  # the text so far could still begin a call
    TEXT = "text"  # free text: every delta is content
    HEAD = "head"  # between calls, or inside a call's head: waiting for its name
    ARGUMENTS = "arguments"  # inside a call's arguments
    UNKNOWN = "unknown"  # a call this parser cannot follow: the kernel's final parse decides


class ToolDeltas:
    def __init__(self) -> None:
        self._text = ""  # all raw text so far
        self._pos = 0  # where unconsumed text starts
        self._mode = _Mode.UNDECIDED
        self.calls: list[CallStart] = []
        self._arguments: list[str] = []  # per call, the fragments sent so far, joined

    @property
    def started_calls(self) -> int:
        return len(self.calls)

    def feed(self, text: str) -> list[Delta]:
        self._text += text
        out: list[Delta] = []
        while True:
            before = (self._mode, self._pos)
            out += self._step()
            if (self._mode, self._pos) == before:
                return out

    def _step(self) -> list[Delta]:
        rest = self._text[self._pos :]
        if self._mode is _Mode.UNDECIDED:
            stripped = rest.lstrip()
            if not stripped or OPEN.startswith(stripped):
                return []
            self._mode = _Mode.HEAD if stripped.startswith(OPEN) else _Mode.TEXT
            return []
        if self._mode is _Mode.TEXT:
            self._pos = len(self._text)
            return [ContentDelta(rest)] if rest else []
        if self._mode is _Mode.HEAD:
            head = _HEAD.match(rest)
            if head is None:
                if len(rest) > MAX_HEAD_CHARS or (rest.strip() and not _could_begin_head(rest)):
                    self._mode = _Mode.UNKNOWN
                return []
            self._pos += head.end()
            call = CallStart(len(self.calls), "call_" + secrets.token_hex(12), head.group(1))
            self.calls.append(call)
            self._arguments.append("")
            self._mode = _Mode.ARGUMENTS
            return [call]
        if self._mode is _Mode.ARGUMENTS:
            tail = _TAIL.search(rest)
            if tail is not None:
                self._pos += tail.end()
                self._mode = _Mode.HEAD
                return self._arguments_delta(rest[: tail.start()])
            held = rest.rfind("}")
            fragment = rest if held < 0 else rest[:held]
            self._pos += len(fragment)
            return self._arguments_delta(fragment)
        return []

    def _arguments_delta(self, fragment: str) -> list[Delta]:
        if not fragment:
            return []
        index = len(self.calls) - 1
        self._arguments[index] += fragment
        return [ArgumentsDelta(index, fragment)]

    def finish(self, completion: Completion) -> list[Delta]:
        """What is left to send once the kernel's Completion arrived."""
        out: list[Delta] = []
        rest = self._text[self._pos :]
        if self._mode is _Mode.UNDECIDED and not completion.tool_calls and rest:
            out.append(ContentDelta(rest))
        elif self._mode is _Mode.ARGUMENTS:
            final = (
                completion.tool_calls[len(self.calls) - 1] if len(completion.tool_calls) >= len(self.calls) else None
            )
            if final is not None and final.name == self.calls[-1].name:
                self._mode = _Mode.HEAD  # the call ended (a truncated one would not have been parsed)
                out += self._arguments_delta(rest[: rest.rfind("}")] if rest.rfind("}") >= 0 else rest)
            else:
                out += self._arguments_delta(rest)  # cut short (max_tokens): the partial arguments, as OpenAI
        self._pos = len(self._text)
        for call in completion.tool_calls[len(self.calls) :]:
            start = CallStart(len(self.calls), call.id, call.name)
            self.calls.append(start)
            self._arguments.append("")
            out += [start, *self._arguments_delta_at(start.index, call.arguments)]
        return out

    def _arguments_delta_at(self, index: int, text: str) -> list[Delta]:
        self._arguments[index] += text
        return [ArgumentsDelta(index, text)] if text else []

    def arguments(self, index: int) -> str:
        """The arguments sent for call index so far."""
        return self._arguments[index]


def _could_begin_head(text: str) -> bool:
    """text may still grow into a call head: it begins with the marker (or a prefix of it). Past the marker, a head
    that never completes is given up at MAX_HEAD_CHARS."""
    probe = text.lstrip()
    return probe.startswith(OPEN) or OPEN.startswith(probe)
