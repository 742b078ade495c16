"""A thread's side of the reply path: encode a reply and queue it for the I/O thread.

Each thread that answers syscalls (the kernel loop, the preprocessor, each service worker) owns one Outbox: a ZeroMQ
socket is used from one thread only. It sits below both the daemon (whose I/O thread binds OUTBOX_ADDRESS and drains it)
and the services (whose workers answer through it), so the services never import the daemon. A reply that cannot be
encoded (a kernel bug: a value msgpack cannot carry) is replaced by an `internal` error for that call, so a bad reply
never ends the thread that sends it. An error reply carries the ProtocolError's code, message and retry_after_s (fail),
or those given one by one (error).
"""

from __future__ import annotations

import logging

import zmq

from ipc.codec import encode, encode_error
from ipc.errors import ErrorCode, ProtocolError
from ipc.messages import REPLY_RESULT, REPLY_TOKEN, Token

log = logging.getLogger("aiosd.outbox")

OUTBOX_ADDRESS = "inproc://aiosd-outbox"


class Outbox:
    def __init__(self, context: zmq.Context):
        self._socket = context.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.SNDHWM, 0)  # inproc to the I/O thread, which drains it; per-peer limits are there
        self._socket.connect(OUTBOX_ADDRESS)

    def result(self, identity: bytes, req_id: int | str | None, body) -> None:
        try:
            frame = encode(REPLY_RESULT, req_id, body)
        except Exception:
            log.exception("could not encode the result of request %r", req_id)
            frame = encode_error(req_id, ErrorCode.INTERNAL, "the kernel could not encode its reply")
        self._socket.send_multipart([identity, frame])

    def error(
        self,
        identity: bytes,
        req_id: int | str | None,
        code: ErrorCode,
        message: str,
        retry_after_s: float | None = None,
    ) -> None:
        self._socket.send_multipart([identity, encode_error(req_id, code, message, retry_after_s)])

    def fail(self, identity: bytes, req_id: int | str | None, error: ProtocolError) -> None:
        """Answer req_id with error: its code, message and retry_after_s."""
        self.error(identity, req_id, error.code, error.message, error.retry_after_s)

    def token(self, identity: bytes, req_id: int | str, text: str, token_id: int) -> None:
        self._socket.send_multipart([identity, encode(REPLY_TOKEN, req_id, Token(text=text, token_id=token_id))])

    def close(self) -> None:
        self._socket.close(linger=-1)

    def stop_server(self) -> None:
        """Ask the I/O thread to send what is queued, then close the socket."""
        self._socket.send_multipart([b""])
        self.close()
