"""Malformed input over the real socket gets an error reply, and the kernel keeps serving."""

import msgpack
import pytest

from ipc.messages import PROTOCOL_VERSION
from tests.kernel.raw_agent import RawAgent


@pytest.fixture
def raw(kernel):
    agent = RawAgent(kernel.address)
    yield agent
    agent.close()


def _packed(**message):
    return msgpack.packb({"v": PROTOCOL_VERSION, "id": 1, "body": {}, **message})


@pytest.mark.parametrize(
    "frames, code",
    [
        ((b"\x00\xff\xfe not msgpack",), "bad_frame"),
        ((msgpack.packb("just a string"),), "bad_frame"),
        ((_packed(type="kernel.ping"), b"second frame"), "bad_frame"),
        ((_packed(type="kernel.ping", v=2),), "bad_version"),
        ((_packed(type="no.such.call"),), "unknown_type"),
        ((_packed(type="hello"),), "bad_request"),  # missing name
        ((_packed(type="hello", body={"name": 7}),), "bad_request"),  # wrong field type
        ((_packed(type="kernel.ping", body={"x": 1}),), "bad_request"),  # unknown field
        ((_packed(type="hello", body={"name": "x" * (2 << 20)}),), "too_large"),  # over the 1 MiB test limit
    ],
)
def test_bad_frame_gets_an_error_reply_then_the_kernel_serves_on(raw, frames, code):
    raw.send_bytes(*frames)
    reply = raw.recv()
    assert (reply["type"], reply["body"]["code"]) == ("error", code)
    assert raw.call("kernel.ping", 2, {}) == {"v": PROTOCOL_VERSION, "id": 2, "type": "result", "body": {}}


def test_syscalls_before_hello_are_refused_except_ping(raw):
    reply = raw.call("proc.list", 1, {})
    assert (reply["id"], reply["body"]["code"]) == (1, "hello_required")
    assert raw.call("kernel.ping", 2, {})["type"] == "result"
    raw.hello()
    assert raw.call("proc.list", 3, {})["type"] == "result"


def test_second_hello_is_refused(raw):
    raw.hello()
    assert raw.call("hello", 2, {"name": "again"})["body"]["code"] == "bad_request"


def test_duplicate_request_id_in_flight(kernel, raw):
    raw.hello()
    kernel.engine.stalled = True
    raw.send("llm.generate", 5, {"prompt": "a", "max_tokens": 50})
    reply = raw.call("llm.generate", 5, {"prompt": "b", "max_tokens": 50})
    assert (reply["id"], reply["body"]["code"]) == (5, "duplicate_id")
