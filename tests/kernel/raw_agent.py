"""A bare DEALER socket speaking the wire protocol by hand, to send what the SDK never would."""

from __future__ import annotations

import dataclasses

import msgpack
import zmq

from ipc.messages import PROTOCOL_VERSION

REPLY_TIMEOUT_MS = 30_000


class RawAgent:
    def __init__(self, address: str):
        self._zmq = zmq.Context()
        self.socket = self._zmq.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(address)

    def send(self, msg_type: str, req_id, body) -> None:
        body = dataclasses.asdict(body) if dataclasses.is_dataclass(body) else body
        self.send_bytes(msgpack.packb({"v": PROTOCOL_VERSION, "id": req_id, "type": msg_type, "body": body}))

    def send_bytes(self, *frames: bytes) -> None:
        self.socket.send_multipart(list(frames))

    def recv(self) -> dict:
        assert self.socket.poll(REPLY_TIMEOUT_MS), "no reply from the kernel"
        return msgpack.unpackb(self.socket.recv())

    def call(self, msg_type: str, req_id, body) -> dict:
        self.send(msg_type, req_id, body)
        return self.recv()

    def hello(self, name: str = "raw", token: str | None = None) -> str:
        body = {"name": name} if token is None else {"name": name, "token": token}
        reply = self.call("hello", "hello", body)
        assert reply["type"] == "result", reply
        return reply["body"]["agent_id"]

    def close(self) -> None:
        self.socket.close()
        self._zmq.term()
