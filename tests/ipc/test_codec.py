"""Protocol round trips and the decoder's answers to malformed frames."""

import msgpack
import pytest

from ipc.codec import decode_reply, decode_request, encode, encode_error
from ipc.errors import ErrorCode, ProtocolError
from ipc.messages import (
    PROTOCOL_VERSION,
    AgentInfo,
    Chat,
    ChatMessage,
    Completion,
    Generate,
    Grant,
    Hello,
    HelloResult,
    ProcTable,
    RequestInfo,
    SetPriority,
    Timing,
    Token,
    Usage,
)
from ipc.service_messages import (
    FsPath,
    FsRollback,
    FsSearch,
    FsWrite,
    MemAdd,
    MemRef,
    MemSearch,
    MemUpdate,
    Share,
    ToolApprove,
    ToolCallRequest,
)
from ipc.syscalls import SYSCALLS

SAMPLE_SYSCALLS = {
    "hello": Hello(name="qa", priority=2, token="t"),
    "llm.generate": Generate(
        prompt="Once",
        max_tokens=7,
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        seed=1,
        stop=("\n",),
        stream=True,
        priority=-1,
        ignore_eos=True,
        predicted_tokens=7,
    ),
    "llm.chat": Chat(
        messages=[ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content="hi")],
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        tool_choice={"type": "function", "function": {"name": "f"}},
    ),
    "proc.set_priority": SetPriority(agent_id="a3", priority=5),
    "access.grant": Grant(capabilities=["proc.kill"]),
    "access.share": Share(kind="fs", grantee="reader", mode="rw", prefix="notes"),
    "mem.add": MemAdd(text="the cat sat", metadata={"topic": "cats", "n": 1}),
    "mem.search": MemSearch(query="kitten", k=3, filter={"topic": "cats"}, space="uid:0/notes"),
    "mem.get": MemRef(id="m1"),
    "mem.update": MemUpdate(id="m1", text="the cat slept"),
    "mem.delete": MemRef(id="m1", space="uid:0/notes"),
    "fs.write": FsWrite(path="a/b.txt", data=b"\x00\xffbytes"),
    "fs.read": FsPath(path="a/b.txt", version=3),
    "fs.delete": FsPath(path="a/b.txt"),
    "fs.versions": FsPath(path="a/b.txt"),
    "fs.rollback": FsRollback(path="a/b.txt", version=2),
    "fs.search": FsSearch(query="budget", k=2),
    "tool.call": ToolCallRequest(name="calculator", arguments={"expression": "2 + 2"}),
    "tool.approve": ToolApprove(approval_id="p1", allow=True),
}


@pytest.mark.parametrize("syscall", sorted(SAMPLE_SYSCALLS))
def test_syscall_round_trip(syscall):
    envelope = decode_request(encode(syscall, 41, SAMPLE_SYSCALLS[syscall]))
    assert (envelope.req_id, envelope.type, envelope.body) == (41, syscall, SAMPLE_SYSCALLS[syscall])


def test_every_syscall_with_defaults_round_trips():
    for syscall, (body_type, _) in SYSCALLS.items():
        if syscall not in SAMPLE_SYSCALLS and syscall not in ("llm.cancel", "proc.kill"):
            assert decode_request(encode(syscall, "x", body_type())).body == body_type()


def test_reply_round_trips():
    completion = Completion(
        text="hi",
        finish_reason="eos",
        usage=Usage(prompt_tokens=3, completion_tokens=1),
        timing=Timing(queue_s=0.0, ttft_s=None, total_s=0.1),
    )
    assert decode_reply(encode("result", 1, completion), "llm.chat").body == completion
    table = ProcTable(
        agents=[
            AgentInfo(
                agent_id="a1",
                name="qa",
                pid=None,
                priority=0,
                service_tokens=9,
                requests=[RequestInfo(request_id="r", state="running", priority=1, prompt_tokens=4, output_tokens=5)],
            )
        ]
    )
    assert decode_reply(encode("result", 2, table), "proc.list").body == table
    assert decode_reply(encode("token", 3, Token(text="a", token_id=7)), "llm.chat").body == Token(text="a", token_id=7)
    error = decode_reply(encode_error(4, ErrorCode.KILLED, "gone"), "hello")
    assert (error.type, error.body.code, error.body.message) == ("error", "killed", "gone")
    hello = HelloResult(agent_id="a1", model="m", scheduler="fifo")
    assert decode_reply(encode("result", 5, hello), "hello").body == hello


def _frame(**fields) -> bytes:
    message = {"v": PROTOCOL_VERSION, "id": 9, "type": "llm.generate", "body": {"prompt": "x"}}
    message.update(fields)
    return msgpack.packb({k: v for k, v in message.items() if v is not ...})


@pytest.mark.parametrize(
    "frame, code, req_id",
    [
        (b"\xc1\xff garbage", ErrorCode.BAD_FRAME, None),
        (msgpack.packb([1, 2, 3]), ErrorCode.BAD_FRAME, None),
        (msgpack.packb({"v": 1}) + b"trailing", ErrorCode.BAD_FRAME, None),
        (_frame(v=99), ErrorCode.BAD_VERSION, 9),
        (_frame(v=...), ErrorCode.BAD_VERSION, 9),
        (_frame(type="llm.teleport"), ErrorCode.UNKNOWN_TYPE, 9),
        (_frame(type=...), ErrorCode.BAD_FRAME, 9),
        (_frame(extra=1), ErrorCode.BAD_FRAME, 9),
        (_frame(id=-1), ErrorCode.BAD_FRAME, None),
        (_frame(id=True), ErrorCode.BAD_FRAME, None),
        (_frame(id="x" * 65), ErrorCode.BAD_FRAME, None),
        (_frame(body={}), ErrorCode.BAD_REQUEST, 9),  # missing field
        (_frame(body={"prompt": 5}), ErrorCode.BAD_REQUEST, 9),  # wrong type
        (_frame(body={"prompt": "x", "max_tokens": "many"}), ErrorCode.BAD_REQUEST, 9),
        (_frame(body={"prompt": "x", "max_tokens": True}), ErrorCode.BAD_REQUEST, 9),  # bool is not an int
        (_frame(body={"prompt": "x", "stop": "\n"}), ErrorCode.BAD_REQUEST, 9),  # string is not an array
        (_frame(body={"prompt": "x", "colour": "red"}), ErrorCode.BAD_REQUEST, 9),  # unknown field
        (_frame(body=[]), ErrorCode.BAD_REQUEST, 9),
        (_frame(type="llm.chat", body={"messages": [{"role": "pirate", "content": "arr"}]}), ErrorCode.BAD_REQUEST, 9),
        (_frame(type="llm.chat", body={"messages": [{"role": "user"}]}), ErrorCode.BAD_REQUEST, 9),
    ],
)
def test_malformed_frames_are_refused_with_a_code(frame, code, req_id):
    with pytest.raises(ProtocolError) as caught:
        decode_request(frame)
    assert (caught.value.code, caught.value.req_id) == (code, req_id)


def test_error_names_the_offending_field():
    with pytest.raises(ProtocolError, match=r"body\.messages\[1\]\.content"):
        decode_request(
            _frame(
                type="llm.chat", body={"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": 3}]}
            )
        )


def test_oversized_frame():
    with pytest.raises(ProtocolError) as caught:
        decode_request(_frame(body={"prompt": "x" * 2000}), max_bytes=1000)
    assert caught.value.code is ErrorCode.TOO_LARGE


def test_float_fields_accept_integers_and_ints_refuse_floats():
    assert decode_request(_frame(body={"prompt": "x", "temperature": 1})).body.temperature == 1.0
    with pytest.raises(ProtocolError):
        decode_request(_frame(body={"prompt": "x", "max_tokens": 1.5}))


def test_heartbeat_needs_no_request_id():
    envelope = decode_request(msgpack.packb({"v": PROTOCOL_VERSION, "id": None, "type": "agent.heartbeat", "body": {}}))
    assert (envelope.type, envelope.req_id) == ("agent.heartbeat", None)


@pytest.mark.parametrize(
    "syscall, body, field",
    [
        ("hello", {"name": "x" * 65}, "name"),
        ("hello", {"name": "bad\x00name"}, "name"),
        ("hello", {"name": "qa", "priority": 21}, "priority"),
        ("hello", {"name": "qa", "priority": 2**64 - 1}, "priority"),
        ("llm.generate", {"prompt": "a", "priority": 10**18}, "priority"),
        ("llm.generate", {"prompt": "a", "temperature": float("nan")}, "temperature"),
        ("llm.generate", {"prompt": "a", "temperature": float("inf")}, "temperature"),
        ("llm.generate", {"prompt": "a", "top_p": 0.0}, "top_p"),
        ("llm.generate", {"prompt": "a", "seed": -1}, "seed"),
        ("llm.generate", {"prompt": "a", "max_tokens": 0}, "max_tokens"),
        ("llm.generate", {"prompt": "a", "stop": ["s"] * 17}, "stop"),
        ("llm.generate", {"prompt": "a", "stop": ["s" * 129]}, "stop[0]"),
        ("proc.kill", {"agent_id": "a" * 100}, "agent_id"),
        ("llm.cancel", {"request_id": -1}, "request_id"),
    ],
)
def test_values_out_of_bounds_are_refused(syscall, body, field):
    frame = msgpack.packb({"v": PROTOCOL_VERSION, "id": 9, "type": syscall, "body": body})
    with pytest.raises(ProtocolError) as raised:
        decode_request(frame)
    assert raised.value.code is ErrorCode.BAD_REQUEST and raised.value.req_id == 9
    assert f"body.{field}" in raised.value.message


def test_error_replies_never_echo_a_large_value():
    frame = msgpack.packb({"v": PROTOCOL_VERSION, "id": 3, "type": "x" * 100_000, "body": {}})
    with pytest.raises(ProtocolError) as raised:
        decode_request(frame)
    assert len(encode_error(raised.value.req_id, raised.value.code, raised.value.message)) < 400


def test_a_frame_without_an_id_gets_an_error_not_a_crash():
    frame = msgpack.packb({"v": PROTOCOL_VERSION, "type": "kernel.ping", "body": {}})
    with pytest.raises(ProtocolError) as raised:
        decode_request(frame)
    assert raised.value.code is ErrorCode.BAD_FRAME and raised.value.req_id is None
