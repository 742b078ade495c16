"""Incremental detokenization with stop strings: turns one sequence's output tokens into text deltas.

A delta never ends inside a UTF-8 character (a byte-level token may carry half of one) and never contains text that may
turn out to be the beginning of a stop string: such text is withheld until the next tokens settle it.

Cost per token is bounded by the stop strings, not by the text so far: only the withheld text (shorter than the
longest stop string) plus the new token's text is kept and searched, and the longest withheld stop-string start is
found with each stop string's KMP automaton over that window, O(total stop length) per token. The full text is never
kept or rebuilt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

# Tokens decoded together with the new ones, so a merge across the boundary (e.g. a leading space) decodes as it would
# in
# the full text.
_CONTEXT_TOKENS = 5


class TextStream:
    def __init__(self, decode: Callable[[Sequence[int]], str], stop: Sequence[str], prior_ids: Sequence[int] = ()):
        """prior_ids: output tokens of a resumed sequence. The stream starts in the state it had after them, having
        emitted their text except what it was still withholding then (an unfinished character, a possible stop
        string's start): that text comes out with the next tokens instead of being lost."""
        self._decode = decode
        self._stops = tuple(_StopString(s) for s in stop)
        self._ids = list(prior_ids)
        self._read_offset = self._complete_prefix_len()  # tokens whose text is settled
        self._prefix_offset = max(0, self._read_offset - _CONTEXT_TOKENS)
        # Settled text not yet returned. A stream withholds exactly the tail of its text that could start a stop
        # string, and a withheld tail only grows until released, so the tail found over the whole prior text is the
        # one the stream had withheld when the tokens came one by one.
        text = decode(self._ids[: self._read_offset]) if self._ids else ""
        self._pending = text[len(text) - self._partial_stop_len(text) :]

    def push(self, token_id: int) -> tuple[str, bool]:
        """Add a token. Returns (text delta to emit now, whether a stop string matched: then the sequence ends)."""
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        new = ""
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            new = full[len(prefix) :]
            self._pending += new
            self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        return self._settle(len(new))

    def flush(self) -> str:
        """The sequence ended for another reason: release the withheld text."""
        delta, self._pending = self._pending, ""
        return delta

    def _settle(self, n_new: int) -> tuple[str, bool]:
        # The withheld text held no whole stop string, so a match must end inside the n_new new characters.
        hits = [
            i
            for i in (
                self._pending.find(s.text, max(0, len(self._pending) - n_new - len(s.text) + 1)) for s in self._stops
            )
            if i >= 0
        ]
        if hits:
            delta, self._pending = self._pending[: min(hits)], ""
            return delta, True
        end = len(self._pending) - self._partial_stop_len(self._pending)
        delta, self._pending = self._pending[:end], self._pending[end:]
        return delta, False

    def _partial_stop_len(self, text: str) -> int:
        """Length of the longest tail of text that is a proper prefix of a stop string."""
        return max((s.partial_match(text) for s in self._stops), default=0)

    def _complete_prefix_len(self) -> int:
        """The most leading tokens whose text ends on a whole character (one character spans at most 4 byte tokens)."""
        n = len(self._ids)
        for count in range(n, max(0, n - 4), -1):
            if not self._decode(self._ids[:count]).endswith("\ufffd"):
                return count
        return n  # not an unfinished character but undecodable bytes: their replacement character is the text


class _StopString:
    """One stop string with its KMP failure table, built once per stream."""

    def __init__(self, text: str):
        self.text = text
        self._fail = [0] * len(text)  # _fail[i]: longest proper border of text[:i + 1]
        k = 0
        for i in range(1, len(text)):
            while k and text[i] != text[k]:
                k = self._fail[k - 1]
            if text[i] == text[k]:
                k += 1
            self._fail[i] = k

    def partial_match(self, text: str) -> int:
        """Length of the longest tail of text that is a proper prefix of this stop string. Only the last
        len(stop) - 1 characters can be such a tail, so only they are scanned: O(len(stop)) whatever len(text)."""
        k = 0
        for ch in text[max(0, len(text) - len(self.text) + 1) :]:
            while k and ch != self.text[k]:
                k = self._fail[k - 1]
            if ch == self.text[k]:
                k += 1
            if k == len(self.text):  # a whole match inside the window: fall back to its longest proper border
                k = self._fail[k - 1]
        return k
