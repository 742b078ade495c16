"""Property tests of the decoder (ipc/codec.py + ipc/schema.py) against hostile input.

Contract checked for every input hypothesis can build — arbitrary bytes, arbitrary msgpack values, envelopes with
missing or extra keys, every syscall and notification type with arbitrary bodies, bodies with the right field names
and wrong or extreme values, and very long strings anywhere:

- `decode_request` returns an Envelope or raises ProtocolError, never any other exception (any other exception is a
  kernel bug: the I/O thread runs this on every frame);
- a decoded syscall names a known type, a valid request id and a body of that syscall's dataclass;
- when it raises, the error reply the kernel sends for it (`encode_error(req_id, code, message)`) encodes, and stays
  small (< MAX_ERROR_REPLY_BYTES): an error reply must not echo a 4 MiB value back to the sender.
"""

from __future__ import annotations

import dataclasses
import math

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipc.codec import MAX_ID_CHARS, Envelope, decode_request, encode_error
from ipc.errors import ProtocolError
from ipc.messages import NOTIFICATIONS, PROTOCOL_VERSION
from ipc.schema import from_wire  # noqa: F401  (the module under test, through decode_request)
from ipc.syscalls import SYSCALLS

MAX_ERROR_REPLY_BYTES = 4096
REQUEST_TYPES = sorted(SYSCALLS) + sorted(NOTIFICATIONS)
# derandomized: the same examples every run, so a failure reproduces and a pass means the same thing each time
FUZZ = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---- strategies ------------------------------------------------------------------------------------------------------
# msgpack carries integers in [-2**63, 2**64 - 1]; the bounds themselves are the interesting values
wire_ints = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from(
        [-(2**63), -(2**63) + 1, -1, 0, 1, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1]
    ),
)
wire_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 5e-324, 1e-300, 1e300, 1.7976931348623157e308]),
)
# long strings are built by repetition: hypothesis would take ages to draw 100k characters one by one
# surrogates excluded: msgpack cannot encode them, so no agent can send them (the property is about the kernel's
# decoder)
long_text = st.builds(lambda ch, n: ch * n, st.characters(blacklist_categories=("Cs",)), st.integers(1_000, 200_000))
texts = st.one_of(st.text(max_size=40), long_text)
ext_types = st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=16))  # negative codes: raw_frames
scalars = st.one_of(st.none(), st.booleans(), wire_ints, wire_floats, texts, st.binary(max_size=64), ext_types)
map_keys = st.one_of(
    st.text(max_size=20), long_text, st.binary(max_size=16), wire_ints, st.none(), st.booleans(), wire_floats
)
wire_values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=6), st.dictionaries(map_keys, children, max_size=6)),
    max_leaves=25,
)
request_ids = st.one_of(wire_values, st.integers(0, 2**63 - 1), st.text(min_size=1, max_size=MAX_ID_CHARS))


def _field_names(type_name: str) -> list[str]:
    body_type = NOTIFICATIONS.get(type_name) or SYSCALLS[type_name][0]
    return [f.name for f in dataclasses.fields(body_type)]


# values close to valid for typed fields: extremes of the right type are what handlers see after validation
near_valid = st.one_of(
    wire_ints,
    wire_floats,
    texts,
    st.booleans(),
    st.none(),
    st.lists(texts, max_size=50),
    st.lists(wire_values, max_size=4),
    st.lists(
        st.fixed_dictionaries(
            {
                "role": st.sampled_from(["system", "user", "assistant", "tool", "x"]) | texts,
                "content": texts | wire_values,
            }
        ),
        max_size=4,
    ),
)


@st.composite
def typed_bodies(draw, type_name: str) -> dict:
    """A body using the type's own field names (some dropped, maybe one unknown) with near-valid or arbitrary values."""
    names = _field_names(type_name)
    chosen = draw(st.lists(st.sampled_from(names), unique=True)) if names else []
    body = {name: draw(st.one_of(near_valid, wire_values)) for name in chosen}
    if draw(st.booleans()) and draw(st.integers(0, 9)) == 0:
        body[draw(texts)] = draw(wire_values)
    return body


@st.composite
def envelopes(draw, body_strategy=None) -> dict:
    type_name = draw(st.sampled_from(REQUEST_TYPES))
    body = draw(body_strategy(type_name) if body_strategy else st.dictionaries(map_keys, wire_values, max_size=6))
    return {"v": PROTOCOL_VERSION, "id": draw(request_ids), "type": type_name, "body": body}


@st.composite
def damaged_envelopes(draw) -> dict:
    """An envelope with keys dropped, values swapped for arbitrary ones, or extra keys added."""
    message = draw(envelopes(typed_bodies))
    for key in draw(st.lists(st.sampled_from(["v", "id", "type", "body"]), unique=True, max_size=4)):
        if draw(st.booleans()):
            del message[key]
        else:
            message[key] = draw(wire_values)
    if draw(st.integers(0, 4)) == 0:
        message[draw(map_keys)] = draw(wire_values)
    return message


def _pack(value) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


# ---- the contract ------------------------------------------------------------------------------------------------


def assert_decoded_or_refused(frame: bytes) -> Envelope | ProtocolError:
    """The decoder's contract for one frame; returns what it produced."""
    try:
        envelope = decode_request(frame)
    except ProtocolError as error:
        reply = encode_error(error.req_id, error.code, error.message)
        assert len(reply) < MAX_ERROR_REPLY_BYTES, (
            f"error reply of {len(reply)} bytes for a {len(frame)}-byte frame: {error.message[:200]!r}..."
        )
        assert msgpack.unpackb(reply)["body"]["code"] == error.code.value
        return error
    assert isinstance(envelope, Envelope)
    if envelope.type in NOTIFICATIONS:
        assert isinstance(envelope.body, NOTIFICATIONS[envelope.type])
    else:
        assert envelope.type in SYSCALLS
        assert isinstance(envelope.body, SYSCALLS[envelope.type][0])
        req_id = envelope.req_id
        assert (isinstance(req_id, int) and not isinstance(req_id, bool) and 0 <= req_id < 2**63) or (
            isinstance(req_id, str) and 0 < len(req_id) <= MAX_ID_CHARS
        ), f"accepted request id {req_id!r}"
    return envelope


# raw frames that start like msgpack headers a naive decoder trusts: timestamps (ext -1), huge lengths, deep nesting
header_prefixes = st.sampled_from(
    [
        b"\xd6\xff",
        b"\xd7\xff",
        b"\xc7\x0c\xff",
        b"\xc7\x03\xff",
        b"\xdd\xff\xff\xff\xff",
        b"\xdf\xff\xff\xff\xff",
        b"\xdb\xff\xff\xff\xff",
        b"\xc6\xff\xff\xff\xff",
        b"\x91" * 2000,
        b"\x81\xa1v\x01" + b"\x81\xa0" * 1000,
        b"\xc1",
        b"\x84",
    ]
)
raw_frames = st.one_of(
    st.binary(max_size=512), st.builds(lambda head, tail: head + tail, header_prefixes, st.binary(max_size=32))
)


@FUZZ
@given(raw_frames)
def test_arbitrary_bytes(frame):
    assert_decoded_or_refused(frame)


@FUZZ
@given(st.binary(max_size=64).map(lambda tail: _pack({"v": 1, "id": 1, "type": "kernel.ping", "body": {}}) + tail))
def test_valid_frame_with_trailing_bytes(frame):
    result = assert_decoded_or_refused(frame)
    assert isinstance(result, Envelope) == (frame == _pack({"v": 1, "id": 1, "type": "kernel.ping", "body": {}}))


@FUZZ
@given(wire_values)
def test_arbitrary_msgpack_values(value):
    assert_decoded_or_refused(_pack(value))


@FUZZ
@given(envelopes())
def test_every_type_with_arbitrary_body(message):
    assert_decoded_or_refused(_pack(message))


@FUZZ
@given(envelopes(typed_bodies))
def test_every_type_with_its_fields_and_wrong_or_extreme_values(message):
    assert_decoded_or_refused(_pack(message))


@FUZZ
@given(damaged_envelopes())
def test_damaged_envelopes(message):
    assert_decoded_or_refused(_pack(message))


LONG = "\u00e9" * 60_000 + "x" * 60_000  # multi-byte and ASCII: ~180 KB as UTF-8


@pytest.mark.parametrize("type_name", REQUEST_TYPES)
def test_long_values_are_not_echoed(type_name):
    """A long value in each place an error message might quote it: type, version, key, id, field name, field value;
    every place that echoes it is listed."""
    names = _field_names(type_name) or ["x"]
    places = {
        "type": {"v": 1, "id": 1, "type": LONG, "body": {}},
        "version": {"v": LONG, "id": 1, "type": type_name, "body": {}},
        "envelope key": {"v": 1, "id": 1, "type": type_name, "body": {}, LONG: 1},
        "request id": {"v": 1, "id": LONG, "type": type_name, "body": {}},
        "body field name": {"v": 1, "id": 1, "type": type_name, "body": {LONG: 1}},
        "body field value": {"v": 1, "id": 1, "type": type_name, "body": {name: [LONG] for name in names}},
        "nested value": {"v": 1, "id": 1, "type": type_name, "body": {name: {"k": [[LONG]]} for name in names}},
        "literal": {"v": 1, "id": 1, "type": "llm.chat", "body": {"messages": [{"role": LONG, "content": ""}]}},
    }
    echoed = []
    for place, message in places.items():
        try:
            assert_decoded_or_refused(_pack(message))
        except AssertionError as failure:
            echoed.append(f"{place}: {str(failure)[:160]}")
    assert not echoed, "error replies echo long values:\n" + "\n".join(echoed)
