"""Incremental detokenization with stop strings: turns one sequence's output tokens into text deltas.

A delta never ends inside a UTF-8 character (a byte-level token may carry half of one) and never contains text that may
turn out to be the beginning of a stop string: such text is withheld until the next tokens settle it.
"""
from __future__ import annotations

from typing import Callable, Sequence

# Tokens decoded together with the new ones, so a merge across the boundary (e.g. a leading space) decodes as it would in
# the full text.
_CONTEXT_TOKENS = 5


class TextStream:
    def __init__(self, decode: Callable[[Sequence[int]], str], stop: Sequence[str], prior_ids: Sequence[int] = ()):
        """prior_ids: output tokens of a resumed sequence. The stream starts in the state it had after them, having
        emitted their text except what it was still withholding then (an unfinished character, a possible stop
        string's start): that text comes out with the next tokens instead of being lost."""
        self._decode = decode
        self._stop = tuple(stop)
        self._ids = list(prior_ids)
        self._read_offset = self._complete_prefix_len()     # tokens whose text is settled into _text
        self._prefix_offset = max(0, self._read_offset - _CONTEXT_TOKENS)
        self._text = decode(self._ids[:self._read_offset])  # settled text of every token so far
        # Chars of _text already returned. A stream withholds exactly the tail of its text that could start a stop
        # string, and a withheld tail only grows until released, so the tail found over the whole text is the one the
        # stream had withheld when the tokens came one by one.
        self._emitted = len(self._text) - _partial_stop_len(self._text, self._stop)

    def push(self, token_id: int) -> tuple[str, bool]:
        """Add a token. Returns (text delta to emit now, whether a stop string matched: then the sequence ends)."""
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset:self._read_offset])
        full = self._decode(self._ids[self._prefix_offset:])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self._text += full[len(prefix):]
            self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        return self._settle()

    def flush(self) -> str:
        """The sequence ended for another reason: release the withheld text."""
        delta = self._text[self._emitted:]
        self._emitted = len(self._text)
        return delta

    def _settle(self) -> tuple[str, bool]:
        hits = [i for i in (self._text.find(s, self._emitted) for s in self._stop) if i >= 0]
        if hits:
            end = min(hits)
            delta = self._text[self._emitted:end]
            self._emitted = len(self._text)
            return delta, True
        end = len(self._text) - _partial_stop_len(self._text[self._emitted:], self._stop)
        delta = self._text[self._emitted:end]
        self._emitted = max(self._emitted, end)
        return delta, False

    def _complete_prefix_len(self) -> int:
        """The most leading tokens whose text ends on a whole character (one character spans at most 4 byte tokens)."""
        n = len(self._ids)
        for count in range(n, max(0, n - 4), -1):
            if not self._decode(self._ids[:count]).endswith("\ufffd"):
                return count
        return n      # not an unfinished character but undecodable bytes: their replacement character is the text


def _partial_stop_len(pending: str, stops: tuple[str, ...]) -> int:
    """Length of the longest tail of pending that is a proper prefix of a stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(pending)), best, -1):
            if pending.endswith(stop[:n]):
                best = n
                break
    return best
