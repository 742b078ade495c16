"""CallWatch: a call is reported once, with its name and arguments, as soon as its arguments object closes (before
the call's end markup), however the text is split into deltas; text that is not a call reports nothing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.engine.structured.call_watch import CallWatch, ClosedCall
from kernel.engine.structured.tool_formats import FORMATS, GENERIC, LLAMA3_JSON, QWEN

names = st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True)
scalars = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=12)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
arguments = st.dictionaries(st.text(max_size=8), values, max_size=4)
formats = st.sampled_from(sorted(FORMATS.values(), key=lambda f: f.style.value))


def feed_split(watch: CallWatch, text: str, cuts: list[int]) -> list[tuple[int, ClosedCall]]:
    """Feed text cut at cuts; (characters fed so far, call) for each call reported."""
    found, last = [], 0
    for cut in sorted({c % (len(text) + 1) for c in cuts} | {len(text)}):
        found += [(cut, call) for call in watch.feed(text[last:cut])]
        last = cut
    return found


@settings(max_examples=300, deadline=None)
@given(formats, names, arguments, st.lists(st.integers(0, 10_000), max_size=12))
def test_a_call_is_reported_once_when_its_arguments_close(fmt, name, args, cuts):
    text = fmt.format_call(name, args)
    found = feed_split(CallWatch(fmt), text, cuts)
    assert [call for _, call in found] == [ClosedCall(name, args)]
    # reported by the time the arguments closed: only the call's "}" and its close markup were left
    assert found[0][0] >= len(text) - 1 - len(fmt.close)


@settings(max_examples=200, deadline=None)
@given(formats, names, arguments)
def test_character_by_character_the_call_is_reported_just_after_its_arguments(fmt, name, args):
    text = fmt.format_call(name, args)
    watch = CallWatch(fmt)
    at = [i for i, char in enumerate(text) if watch.feed(char)]
    assert at == [len(text) - 2 - len(fmt.close)]  # the arguments' closing "}", before the call's own


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.lists(st.integers(0, 10_000), max_size=8))
def test_free_text_without_a_marker_reports_nothing(text, cuts):
    text = text.replace("<tool_call>", "")
    assert feed_split(CallWatch(GENERIC), text, cuts) == []
    if not text.lstrip().startswith(("{", "<|python_tag|>")):
        assert feed_split(CallWatch(LLAMA3_JSON), text, cuts) == []


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(names, arguments), min_size=1, max_size=4), st.lists(st.integers(0, 10_000), max_size=12))
def test_several_calls_in_a_row_each_reported_in_order(calls, cuts):
    text = "Let me check.\n" + QWEN.between.join(QWEN.format_call(n, a) for n, a in calls)
    found = feed_split(CallWatch(QWEN), text, cuts)
    assert [call for _, call in found] == [ClosedCall(n, a) for n, a in calls]


def test_one_call_formats_report_only_the_first_call():
    text = GENERIC.format_call("a", {"x": 1}) + "\n" + GENERIC.format_call("b", {})
    assert CallWatch(GENERIC).feed(text) == [ClosedCall("a", {"x": 1})]


def test_a_bare_json_call_after_the_python_tag_and_not_after_text():
    call = LLAMA3_JSON.format_call("f", {"q": "x"})
    assert CallWatch(LLAMA3_JSON).feed("<|python_tag|>" + call) == [ClosedCall("f", {"q": "x"})]
    assert CallWatch(LLAMA3_JSON).feed("Sure: " + call) == []


def test_a_cut_off_or_malformed_call_reports_nothing():
    assert CallWatch(GENERIC).feed('<tool_call>\n{"name":"f","arguments":{"x":') == []
    assert CallWatch(GENERIC).feed('<tool_call>\n{"name":3,"arguments":{}}\n</tool_call>') == []
    assert CallWatch(GENERIC).feed('<tool_call>\n{"name":"f","arguments":[1]}\n</tool_call>') == []
