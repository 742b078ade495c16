"""Hostile frames against the live in-process kernel (real I/O thread, loop and socket; FakeEngine).

Contract checked: whatever a raw DEALER sends — garbage bytes, random msgpack, multipart messages, oversized frames,
envelopes of every type with wrong bodies, valid calls with extreme values (priority 2**63-1, max_tokens 2**64-1,
temperature 1e-300 or nan, thousands of stop strings), proc.kill/set_priority/cancel on other agents —

- every frame that names a request id of its own gets exactly one final reply (result or error) carrying that id,
  token frames only before it; a frame without a usable id (multipart, oversized, damaged id, notification) gets at
  most one reply;
- no reply is an `internal` error (that code means a kernel bug);
- the kernel's I/O thread and loop stay alive, and afterwards a normal SDK agent's ping and LLM call are answered
  correctly.

One kernel serves the whole property (state left by earlier examples — a renice to 2**63-1, a half-killed agent — is
part of what is fuzzed), so hypothesis does not shrink: a failure lists the recent frames and replies instead.
"""

from __future__ import annotations

import math
import os
import socket

import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import sdk
from ipc.messages import NOTIFICATIONS
from ipc.syscalls import SYSCALLS
from tests.ipc.test_fuzz_codec import typed_bodies, wire_values
from tests.kernel.fake_engine import expected_output
from tests.kernel.fuzz_session import MAX_FRAME_BYTES, REPLY_TIMEOUT_S, FuzzSession, session_settings
from tests.kernel.harness import InProcessKernel

EXTREME_INTS = [0, 1, -1, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1]
EXTREME_FLOATS = [0.0, -0.0, 5e-324, 1e-300, 1e-30, 1e-5, 0.7, 1.0, 100.0, 101.0, 1e300, math.inf, -math.inf, math.nan]
AGENT_IDS = ["SELF", "SELF", "a1", "a2", "a3", "", "a" * 10_000]  # SELF: the sending agent's own id

# ---- frames ----------------------------------------------------------------------------------------------------------
extreme_int = st.sampled_from(EXTREME_INTS) | st.integers(-(2**63), 2**64 - 1)
extreme_float = st.sampled_from(EXTREME_FLOATS) | st.floats()
stop_lists = st.one_of(
    st.lists(st.text(max_size=4), max_size=20),
    st.just(["x"] * 5_000),
    st.builds(lambda n: [str(i) for i in range(n)], st.integers(100, 20_000)),
)
sampling = {
    "max_tokens": st.sampled_from([1, 4, 32]) | extreme_int,
    "temperature": extreme_float,
    "top_p": extreme_float,
    "top_k": extreme_int,
    "seed": st.none() | extreme_int,
    "stop": stop_lists,
    "stream": st.booleans(),
    "priority": extreme_int,
    "ignore_eos": st.booleans(),
    "predicted_tokens": st.none() | extreme_int,
}
# a call valid but for at most two fields: so extreme values that pass validation reach the handlers and the engine
llm_overrides = st.dictionaries(st.sampled_from(sorted(sampling)), st.none(), max_size=2).flatmap(
    lambda keys: st.fixed_dictionaries({key: sampling[key] for key in keys})
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant", "tool"]), "content": st.text(max_size=30)}
    ),
    min_size=1,
    max_size=3,
)
extreme_bodies = {
    "llm.generate": st.builds(
        lambda p, n, o: {"prompt": p, "max_tokens": n, **o},
        st.text(min_size=1, max_size=30),
        st.integers(1, 8),
        llm_overrides,
    ),
    "llm.chat": st.builds(
        lambda m, n, o: {"messages": m, "max_tokens": n, **o}, messages, st.integers(1, 8), llm_overrides
    ),
    "hello": st.fixed_dictionaries(
        {"name": st.text(max_size=20)},
        optional={
            "priority": extreme_int,
            "host": st.sampled_from([None, socket.gethostname(), "elsewhere"]),
            "pid": st.sampled_from([None, 1, os.getpid(), 2**22 + 7]) | extreme_int,
        },
    ),
    "proc.kill": st.fixed_dictionaries({"agent_id": st.sampled_from(AGENT_IDS)}),
    "proc.set_priority": st.fixed_dictionaries({"agent_id": st.sampled_from(AGENT_IDS), "priority": extreme_int}),
    "llm.cancel": st.fixed_dictionaries({"request_id": st.integers(0, 40) | st.text(max_size=4)}),
    "proc.list": st.just({}),
    "kernel.stats": st.just({}),
    "kernel.ping": st.just({}),
}
# ("env", type, body, keep_id) gets a unique request id when sent; ("raw", parts) goes out as it is
envelope_frames = st.sampled_from(sorted(SYSCALLS) + sorted(NOTIFICATIONS)).flatmap(
    lambda t: st.tuples(st.just("env"), st.just(t), extreme_bodies.get(t, st.just({})) | typed_bodies(t))
)
small_raw = st.one_of(
    st.binary(max_size=200).map(lambda b: ("raw", [b])),
    wire_values.map(lambda v: ("raw", [msgpack.packb(v, use_bin_type=True)])),
    st.lists(st.binary(max_size=50), min_size=2, max_size=5).map(lambda parts: ("raw", parts)),  # multipart
    st.tuples(st.just("noid"), st.sampled_from(sorted(SYSCALLS)), wire_values),
)  # damaged id
big_raw = st.one_of(  # a MiB each: drawn rarely, the run stays short
    st.lists(st.just(b"\x00" * (MAX_FRAME_BYTES // 2)), min_size=2, max_size=3).map(lambda p: ("raw", p)),
    st.just(("raw", [b"\x92" * (MAX_FRAME_BYTES + 1)])),
)  # oversized
raw_frames = st.integers(0, 19).flatmap(lambda n: big_raw if n == 0 else small_raw)
frames = st.lists(st.one_of(envelope_frames, envelope_frames, raw_frames), min_size=1, max_size=8)


@pytest.fixture(scope="module")
def fuzz_kernel(tmp_path_factory):
    with InProcessKernel(
        f"ipc://{tmp_path_factory.mktemp('fuzz')}/kernel.sock", max_frame_bytes=MAX_FRAME_BYTES
    ) as kernel:
        yield kernel


@pytest.fixture(scope="module")
def session(fuzz_kernel):
    return FuzzSession(fuzz_kernel)


@session_settings(max_examples=100)
@given(hello_priority=st.none() | st.just(0) | st.sampled_from(EXTREME_INTS), batch=frames)
# found by reading the code (issue 8): priority = agent priority + call hint passes 2**64 and then fails to encode
@example(
    hello_priority=2**64 - 1,
    batch=[("env", "llm.generate", {"prompt": "a", "max_tokens": 2, "priority": 1}), ("env", "proc.list", {})],
)
def test_hostile_frames_each_get_one_reply(session, hello_priority, batch):
    session.run(hello_priority, batch)


def test_kernel_serves_a_normal_agent_after_the_fuzz(fuzz_kernel, session):
    with sdk.connect(fuzz_kernel.address, name="after-fuzz", timeout=REPLY_TIMEOUT_S) as kernel:
        kernel.ping()
        assert kernel.generate("health check", max_tokens=6) == expected_output("health check", 6)
        assert kernel.chat([{"role": "user", "content": "hi"}], max_tokens=3)
        assert any(agent.name == "after-fuzz" for agent in kernel.ps())
