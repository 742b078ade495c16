"""A fuzzing session against a live in-process kernel: sends a batch of frames from one raw DEALER connection and
checks the reply contract (tests/kernel/test_fuzz_kernel.py states it): every frame with a usable request id gets
exactly one final reply, frames without one at most one reply, no reply is an `internal` error, the kernel's threads
stay alive. One kernel serves a whole property, so a failure lists the recent traffic instead of shrinking."""

from __future__ import annotations

import collections
import itertools
import time

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, Phase, settings

from ipc.messages import NOTIFICATIONS, PROTOCOL_VERSION
from tests.kernel.harness import InProcessKernel

MAX_FRAME_BYTES = 1 << 20  # the harnesses' limit: frames over it are refused unread
REPLY_TIMEOUT_S = 60.0  # generous: a loop that died is detected by this running out


def session_settings(max_examples: int) -> settings:
    """Hypothesis settings for a property served by one kernel: reproducible, no deadline, no shrinking (the kernel's
    state spans examples, so a shrunk example would not fail the same way)."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


class FuzzSession:
    """One kernel for the whole property; remembers recent traffic so a failure can show what led to it."""

    def __init__(self, kernel: InProcessKernel):
        self.kernel = kernel
        self.ids = itertools.count(1)
        self.history: collections.deque[str] = collections.deque(maxlen=40)
        self.examples = 0
        self.agent_id = "nobody"  # the current example's agent, once its hello is answered

    def run(self, hello_priority: int | None, batch: list[tuple]) -> None:
        """hello_priority None: the frames come from a connection that never said hello."""
        self.examples += 1
        context = zmq.Context()
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(self.kernel.address)
        try:
            if hello_priority is not None:
                self._hello(dealer, hello_priority)
            expected, loose = self._send_all(dealer, batch)
            self._collect(dealer, expected, loose)
        finally:
            dealer.close(linger=0)
            context.term()

    def _hello(self, dealer: zmq.Socket, priority: int) -> None:
        self.agent_id = "nobody"
        dealer.send(
            msgpack.packb(
                {"v": 1, "id": "hello", "type": "hello", "body": {"name": f"fuzz{self.examples}", "priority": priority}}
            )
        )
        if not dealer.poll(REPLY_TIMEOUT_S * 1000):
            self._fail(f"no reply to hello; threads alive: {_threads_alive(self.kernel)}")
        reply = msgpack.unpackb(dealer.recv())
        self.history.append(f"hello priority {priority}: {reply}")
        if reply["type"] == "result":
            self.agent_id = reply["body"]["agent_id"]

    def _send_all(self, dealer: zmq.Socket, batch: list[tuple]) -> tuple[dict, int]:
        """Send the frames; return {request id: syscall} that must each get exactly one final reply, and how many
        frames may get at most one reply with no usable id."""
        expected, loose = {}, 0
        for frame in batch:
            if frame[0] == "env":
                req_id = f"r{next(self.ids)}"
                body = frame[2]
                if isinstance(body, dict) and body.get("agent_id") == "SELF":
                    body = {**body, "agent_id": self.agent_id}
                packed = msgpack.packb(
                    {"v": PROTOCOL_VERSION, "id": req_id, "type": frame[1], "body": body}, use_bin_type=True
                )
                if frame[1] in NOTIFICATIONS or len(packed) > MAX_FRAME_BYTES or not _readable(packed):
                    loose += 1
                else:
                    expected[req_id] = frame[1]
                parts = [packed]
            elif frame[0] == "noid":
                parts, loose = (
                    [msgpack.packb({"v": 1, "type": frame[1], "body": {}, "id": frame[2]}, use_bin_type=True)],
                    loose + 1,
                )
            else:
                parts, loose = frame[1], loose + 1
            self.history.append(f"sent {_short(parts)}")
            dealer.send_multipart(parts)
        return expected, loose

    def _collect(self, dealer: zmq.Socket, expected: dict, loose: int) -> None:
        finals: collections.Counter = collections.Counter()
        unattributed, internal = 0, []
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        sentinel = None
        while True:
            if sentinel is None and all(finals[r] for r in expected):
                # every reply to an earlier frame leaves the kernel before the answer to a later ping
                sentinel = f"r{next(self.ids)}"
                dealer.send(msgpack.packb({"v": 1, "id": sentinel, "type": "kernel.ping", "body": {}}))
            remaining = deadline - time.monotonic()
            if remaining > 0 and not dealer.poll(min(remaining, 1.0) * 1000):
                if all(_threads_alive(self.kernel).values()):
                    continue  # still working on it: wait on, up to the deadline
                remaining = 0  # a dead thread answers nothing more: fail now, not after the deadline
            if remaining <= 0:
                missing = [f"{r} ({expected[r]})" for r in expected if not finals[r]]
                self._fail(
                    f"no final reply within {REPLY_TIMEOUT_S:.0f} s to {missing or 'the sentinel ping'}; "
                    f"threads alive: {_threads_alive(self.kernel)}"
                )
            reply = msgpack.unpackb(dealer.recv(), strict_map_key=False)
            self.history.append(f"got {_short([repr(reply).encode()])}")
            if reply.get("id") == sentinel and sentinel is not None:
                break
            body = reply.get("body") if isinstance(reply.get("body"), dict) else {}
            if reply.get("type") == "error" and body.get("code") == "internal":
                internal.append(body.get("message"))
            if reply.get("id") in expected:
                if reply.get("type") in ("result", "error"):
                    finals[reply["id"]] += 1
                elif finals[reply["id"]]:
                    self._fail(f"a {reply.get('type')} frame after the final reply to {reply['id']}")
            else:
                unattributed += 1
        doubled = [r for r, n in finals.items() if n > 1]
        if doubled or unattributed > loose or internal:
            self._fail(
                f"replied twice to {doubled}; {unattributed} replies without a known id for {loose} frames "
                f"without one; internal errors: {internal}"
            )

    def _fail(self, message: str) -> None:
        pytest.fail(message + "\nrecent traffic:\n  " + "\n  ".join(self.history), pytrace=False)


def _readable(packed: bytes) -> bool:
    """Whether a receiver can read the frame's id at all: a body with a non-string map key (None, 1.5) makes the
    whole msgpack frame unreadable under strict map keys, so its error reply cannot carry the id."""
    try:
        msgpack.unpackb(packed)
    except ValueError:
        return False
    return True


def _threads_alive(kernel: InProcessKernel) -> dict:
    """The harness's loop and I/O threads (private attributes: read defensively, for the failure message only)."""
    threads = {
        "loop": getattr(kernel, "_thread", None),
        "io": getattr(getattr(kernel, "server", None), "_thread", None),
    }
    return {name: thread.is_alive() for name, thread in threads.items() if thread is not None}


def _short(parts: list[bytes], limit: int = 300) -> str:
    text = " | ".join(repr(p[:limit]) + (f"...({len(p)} bytes)" if len(p) > limit else "") for p in parts)
    return text[: 4 * limit]
