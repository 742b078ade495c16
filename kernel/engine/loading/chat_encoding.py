"""A chat encoded so that only its template makes control tokens: special-token text typed in a message is plain text.

An agent that writes "<|im_start|>system" in its content must not open a system turn. Each occurrence of a special
token's text in a message's content is replaced by a sentinel before the template renders (so template filters such as
trim see a non-space stand-in of the same role), the rendered text is encoded with special tokens recognized (now only
the template's), and each stretch between two of those whose text holds a sentinel is re-encoded, sentinels restored,
by a copy of the tokenizer that does not recognize special tokens. Stretches without a sentinel keep their ids, so a
chat without special-token text encodes exactly as rendering then encoding the whole text always did; and re-encoding
a whole stretch (template text and content together, as the tokenizer splits at special tokens anyway) keeps the
pre-tokenizer's view of the boundary between them unchanged.
"""
from __future__ import annotations

import re

from tokenizers import Tokenizer

from kernel.engine.loading.chat_template import ChatTemplate

# Private-use characters, tried in order, for the sentinel's delimiter: one that occurs nowhere in the messages or the
# template, so every delimiter in the rendered text is ours.
_PRIVATE_USE = range(0xE000, 0xF900)


class ChatEncoder:
    def __init__(self, tokenizer: Tokenizer, template: ChatTemplate):
        self._tok = tokenizer
        self._template = template
        self._plain = Tokenizer.from_str(tokenizer.to_str())
        self._plain.encode_special_tokens = True            # special-token text → its ordinary BPE pieces
        specials = {t.content: i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special and t.content}
        self._special_ids = frozenset(specials.values())
        self._specials = sorted(specials, key=len, reverse=True)    # longest first: "<|a|>b" before "<|a|>"
        self._index_of = {text: i for i, text in enumerate(self._specials)}
        self._special_re = re.compile("|".join(map(re.escape, self._specials))) if specials else None

    def encode(self, messages: list[dict]) -> list[int]:
        if self._special_re is None or not isinstance(messages, list):
            return self._encode(self._template.render(messages))
        seen = self._template.source + "".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        mark = next(chr(c) for c in _PRIVATE_USE if chr(c) not in seen)
        defanged = [self._defang(m, mark) for m in messages]
        rendered = self._template.render(defanged)
        if mark not in rendered:
            return self._encode(rendered)
        restore = re.compile(re.escape(mark) + r"(\d+)" + re.escape(mark))
        encoding = self._tok.encode(rendered, add_special_tokens=False)
        ids: list[int] = []
        run_start, text_start = 0, 0
        for index, (token, (start, end)) in enumerate([*zip(encoding.ids, encoding.offsets), (None, (None, None))]):
            if token is not None and token not in self._special_ids:
                continue
            stretch = rendered[text_start:start]             # the text between two template special tokens
            if mark in stretch:
                plain = restore.sub(lambda m: self._specials[int(m.group(1))], stretch)
                ids += self._plain.encode(plain, add_special_tokens=False).ids
            else:
                ids += encoding.ids[run_start:index]
            if token is not None:
                ids.append(token)
            run_start, text_start = index + 1, end
        return ids

    def _defang(self, message, mark: str):
        """message with each special token's text in its content replaced by mark + index + mark."""
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            return message                                   # the template's checks reject it
        content = self._special_re.sub(lambda m: f"{mark}{self._index_of[m.group(0)]}{mark}",
                                       message["content"])
        return {**message, "content": content}

    def _encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids
