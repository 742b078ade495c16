"""Error replies on the wire: code, message and the optional retry_after_s survive a round trip through the codec and
the SDK's reply typing; a reply without retry_after_s carries no such key; a delay no client could honour is refused
where the reply is made."""

import math

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipc.codec import decode_reply, encode_error, encode_protocol_error
from ipc.errors import ErrorCode, ProtocolError
from ipc.messages import PROTOCOL_VERSION
from sdk import protocol
from sdk.errors import KernelError

delays = st.none() | st.floats(min_value=0, max_value=1e9, allow_nan=False) | st.integers(0, 10**6)


@given(st.sampled_from(list(ErrorCode)), st.text(max_size=50), delays, st.integers(0, 2**62) | st.text(min_size=1))
def test_an_error_reply_round_trips_with_or_without_retry_after(code, message, delay, req_id):
    frame = encode_error(req_id, code, message, delay)
    reply = decode_reply(frame, "llm.chat")
    assert (reply.req_id, reply.type, reply.body.code, reply.body.message) == (req_id, "error", code.value, message)
    assert reply.body.retry_after_s == (None if delay is None else float(delay))
    assert ("retry_after_s" in msgpack.unpackb(frame)["body"]) is (delay is not None)


@given(st.sampled_from(list(ErrorCode)), delays)
def test_the_sdk_raises_kernel_error_with_the_reply_s_retry_after(code, delay):
    frame = encode_protocol_error(ProtocolError(code, "no", 7, retry_after_s=delay))
    with pytest.raises(KernelError) as raised:
        protocol.typed(protocol.unpack(frame), "llm.generate")
    assert (raised.value.code, raised.value.message) == (code.value, "no")
    assert raised.value.retry_after_s == (None if delay is None else float(delay))


def test_a_reply_from_an_older_kernel_has_no_retry_after():
    frame = msgpack.packb(
        {"v": PROTOCOL_VERSION, "id": 3, "type": "error", "body": {"code": "busy", "message": "full"}}
    )
    with pytest.raises(KernelError) as raised:
        protocol.typed(protocol.unpack(frame), "llm.generate")
    assert raised.value.code == "busy" and raised.value.retry_after_s is None


@pytest.mark.parametrize("delay", [-0.5, -1, math.nan, math.inf, True, "1"])
def test_a_delay_no_client_could_honour_is_refused_where_the_error_is_made(delay):
    with pytest.raises(ValueError, match="retry_after_s"):
        ProtocolError(ErrorCode.BUSY, "full", 1, retry_after_s=delay)
    with pytest.raises(ValueError, match="retry_after_s"):
        encode_error(1, ErrorCode.BUSY, "full", delay)


@pytest.mark.parametrize("delay", ["soon", [1], None])
def test_a_kernel_reply_with_a_malformed_retry_after_is_refused_as_a_frame(delay):
    # the SDK reads a peer it does not control: a wrong type fails typing like any other bad field, it does not crash
    body = {"code": "busy", "message": "m", "retry_after_s": delay}
    frame = msgpack.packb({"v": PROTOCOL_VERSION, "id": 3, "type": "error", "body": body})
    if delay is None:  # an explicit nil is the same as absent
        with pytest.raises(KernelError) as raised:
            protocol.typed(protocol.unpack(frame), "llm.generate")
        assert raised.value.retry_after_s is None
    else:
        with pytest.raises(ProtocolError) as refused:
            protocol.typed(protocol.unpack(frame), "llm.generate")
        assert refused.value.code is ErrorCode.BAD_REQUEST and "retry_after_s" in refused.value.message
