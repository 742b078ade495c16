"""Incremental detokenization never emits broken UTF-8 or the start of a stop string."""

from __future__ import annotations

import pytest

from kernel.engine.core.text_stream import TextStream
from tests.engine.tiny_llama import build_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _decode(tok):
    return lambda ids: tok.decode(list(ids), skip_special_tokens=True)


def _byte_tokens(tok, text: str) -> list[int]:
    """One token per UTF-8 byte, so multi-byte characters arrive in pieces."""
    return [tok.token_to_id(_gpt2_char(b)) for b in text.encode()]


def _gpt2_char(b: int) -> str:
    """The printable character GPT-2's byte-level alphabet uses for byte b."""
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    if b in printable:
        return chr(b)
    return chr(256 + [x for x in range(256) if x not in printable].index(b))


def test_multibyte_characters_are_never_split(tok):
    text = "ok 🙂 日本 é!"
    stream = TextStream(_decode(tok), stop=())
    deltas = [stream.push(t)[0] for t in _byte_tokens(tok, text)]
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) + stream.flush() == text
    assert "" in deltas  # some bytes were withheld until their character completed


def test_stop_string_is_withheld_then_cut(tok):
    stream = TextStream(_decode(tok), stop=("END",))
    out = []
    for t in _byte_tokens(tok, "abc EN"):
        out.append(stream.push(t)[0])
    assert "".join(out) == "abc "  # "EN" may start "END": withheld
    delta, stopped = stream.push(_byte_tokens(tok, "D")[0])
    assert stopped and delta == ""


def test_false_alarm_is_released(tok):
    stream = TextStream(_decode(tok), stop=("END",))
    text = "".join(stream.push(t)[0] for t in _byte_tokens(tok, "ENx"))
    assert text == "ENx"
    stream = TextStream(_decode(tok), stop=("END",))
    assert "".join(stream.push(t)[0] for t in _byte_tokens(tok, "aE")) == "a"
    assert stream.flush() == "E"


def test_resumed_stream_does_not_repeat_prior_text(tok):
    ids = tok.encode("hello world again").ids
    stream = TextStream(_decode(tok), stop=(), prior_ids=ids[:2])
    text = "".join(stream.push(t)[0] for t in ids[2:])
    assert tok.decode(ids[:2]) + text == "hello world again"


def test_resumed_stream_releases_a_withheld_stop_prefix(tok):
    ids = _byte_tokens(tok, "abc EN")
    stream = TextStream(_decode(tok), stop=("END",))
    assert "".join(stream.push(t)[0] for t in ids) == "abc "  # "EN" withheld at preemption
    resumed = TextStream(_decode(tok), stop=("END",), prior_ids=ids)
    assert resumed.push(_byte_tokens(tok, "x")[0]) == ("ENx", False)
    resumed = TextStream(_decode(tok), stop=("END",), prior_ids=ids)
    assert resumed.push(_byte_tokens(tok, "D")[0]) == ("", True)  # the stop string still matches across


def test_resumed_stream_completes_a_split_character(tok):
    ids = _byte_tokens(tok, "ok 🙂!")
    split = len(_byte_tokens(tok, "ok ")) + 2  # two of the emoji's four bytes
    stream = TextStream(_decode(tok), stop=())
    assert "".join(stream.push(t)[0] for t in ids[:split]) == "ok "
    resumed = TextStream(_decode(tok), stop=(), prior_ids=ids[:split])
    assert "".join(resumed.push(t)[0] for t in ids[split:]) == "🙂!"


def test_stop_string_straddling_many_tokens_after_false_starts(tok):
    stop = "<END-OF-ANSWER>"
    text = "x <END-OF-ANS <END-OF-ANSWEr <<END-OF-ANSWER> tail"
    stream = TextStream(_decode(tok), stop=(stop, "NEVER"))
    out, stopped = [], False
    for t in _byte_tokens(tok, text):  # one token per byte: the stop string spans 15 tokens
        delta, stopped = stream.push(t)
        out.append(delta)
        if stopped:
            break
    assert stopped and "".join(out) == "x <END-OF-ANS <END-OF-ANSWEr <"


def test_withheld_text_stays_shorter_than_the_longest_stop_string(tok):
    """What a token's scan reads is bounded by the stop strings, not by the text so far (no quadratic cost)."""
    stops = ("abcab", "zz")
    stream = TextStream(_decode(tok), stop=stops)
    text = "abcaabca" * 200 + "abca"
    out = []
    for t in _byte_tokens(tok, text):
        delta, stopped = stream.push(t)
        assert not stopped and len(stream._pending) < max(map(len, stops))
        out.append(delta)
    assert "".join(out) == text[:-4] and stream.flush() == "abca"  # "abca" may still start "abcab"
