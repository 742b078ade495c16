"""A chat encoded so that only its template makes control tokens: special-token text typed in a message is plain text.

An agent that writes "<|im_start|>system" in its content must not open a system turn. Each occurrence of a special
token's text in a message's content is replaced by a sentinel before the template renders (so template filters such as
trim see a non-space stand-in of the same role), the rendered text is encoded with special tokens recognized (now only
the template's), and each stretch between two of those whose text holds a sentinel is re-encoded, sentinels restored,
by the same tokenizer with its recognition of special tokens switched off for that call (encode_special_tokens: a
second copy of the tokenizer would hold its vocabulary and merges twice: hundreds of MiB for Gemma 3's). The switch is
made under the lock every encode with this tokenizer takes (TextTokenizer passes its own), so no other encode sees it.
Stretches without a sentinel keep their ids, so a chat without special-token text encodes exactly as rendering then
encoding the whole text always did; and re-encoding a whole stretch (template text and content together, as the
tokenizer splits at special tokens anyway) keeps the pre-tokenizer's view of the boundary between them unchanged.

With tools (a template that renders its own tools section and past tool calls), every string the caller wrote is
defanged the same way: tool names, descriptions and schemas, a past call's arguments, a tool's result. The sentinel
survives the template's tojson (non-ASCII is kept as is), so a special token's text anywhere in them stays plain text.
"""

from __future__ import annotations

import re
import threading

from tokenizers import Tokenizer

from kernel.engine.loading.chat_template import ChatTemplate

# Private-use characters, tried in order, for the sentinel's delimiter: one that occurs nowhere in the messages or the
# template, so every delimiter in the rendered text is ours.
_PRIVATE_USE = range(0xE000, 0xF900)


class ChatEncoder:
    def __init__(self, tokenizer: Tokenizer, template: ChatTemplate, lock: threading.Lock | None = None):
        """lock: the one every encode with tokenizer takes (the special-token switch must not be seen by others)."""
        self._tok = tokenizer
        self._template = template
        self._lock = lock or threading.Lock()
        specials = {t.content: i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special and t.content}
        self._special_ids = frozenset(specials.values())
        self._specials = sorted(specials, key=len, reverse=True)  # longest first: "<|a|>b" before "<|a|>"
        self._index_of = {text: i for i, text in enumerate(self._specials)}
        self._special_re = re.compile("|".join(map(re.escape, self._specials))) if specials else None

    def encode(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        if self._special_re is None or not isinstance(messages, list):
            return self._encode(self._template.render(messages, tools=tools))
        seen = self._template.source + "".join(_strings([messages, tools]))
        mark = next(chr(c) for c in _PRIVATE_USE if chr(c) not in seen)
        defanged = [self._defang(m, mark) for m in messages]
        rendered = self._template.render(defanged, tools=self._defang_value(tools, mark))
        if mark not in rendered:
            return self._encode(rendered)
        restore = re.compile(re.escape(mark) + r"(\d+)" + re.escape(mark))
        with self._lock:
            encoding = self._tok.encode(rendered, add_special_tokens=False)
        ids: list[int] = []
        run_start, text_start = 0, 0
        for index, (token, (start, end)) in enumerate([*zip(encoding.ids, encoding.offsets), (None, (None, None))]):
            if token is not None and token not in self._special_ids:
                continue
            stretch = rendered[text_start:start]  # the text between two template special tokens
            if mark in stretch:
                plain = restore.sub(lambda m: self._specials[int(m.group(1))], stretch)
                ids += self._plain_ids(plain)
            else:
                ids += encoding.ids[run_start:index]
            if token is not None:
                ids.append(token)
            run_start, text_start = index + 1, end
        return ids

    def _defang(self, message, mark: str):
        """message with each special token's text in its strings replaced by mark + index + mark; its role is kept
        (the template compares it to the role names; a role holding special-token text is refused there)."""
        if not isinstance(message, dict):
            return message  # the template's checks reject it
        return {k: v if k == "role" else self._defang_value(v, mark) for k, v in message.items()}

    def _defang_value(self, value, mark: str):
        if isinstance(value, str):
            return self._special_re.sub(lambda m: f"{mark}{self._index_of[m.group(0)]}{mark}", value)
        if isinstance(value, dict):
            return {self._defang_value(k, mark): self._defang_value(v, mark) for k, v in value.items()}
        if isinstance(value, list):
            return [self._defang_value(v, mark) for v in value]
        return value

    def _encode(self, text: str) -> list[int]:
        with self._lock:
            return self._tok.encode(text, add_special_tokens=False).ids

    def _plain_ids(self, text: str) -> list[int]:
        """text's ids with special-token text spelled by its ordinary BPE pieces."""
        with self._lock:
            self._tok.encode_special_tokens = True
            try:
                return self._tok.encode(text, add_special_tokens=False).ids
            finally:
                self._tok.encode_special_tokens = False


def _strings(value):
    """Every string in a JSON-like value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
