"""The kernel loop's side of the reply path: encode a reply and queue it for the I/O thread."""
from __future__ import annotations

import zmq

from ipc.codec import encode, encode_error
from ipc.errors import ErrorCode
from ipc.messages import REPLY_RESULT, REPLY_TOKEN, Token
from kernel.daemon.io_thread import OUTBOX_ADDRESS


class Outbox:
    """Owned by the kernel loop's thread (a ZeroMQ socket is used from one thread only)."""

    def __init__(self, context: zmq.Context):
        self._socket = context.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.SNDHWM, 0)
        self._socket.connect(OUTBOX_ADDRESS)

    def result(self, identity: bytes, req_id: int | str | None, body) -> None:
        self._socket.send_multipart([identity, encode(REPLY_RESULT, req_id, body)])

    def error(self, identity: bytes, req_id: int | str | None, code: ErrorCode, message: str) -> None:
        self._socket.send_multipart([identity, encode_error(req_id, code, message)])

    def token(self, identity: bytes, req_id: int | str, text: str, token_id: int) -> None:
        self._socket.send_multipart([identity, encode(REPLY_TOKEN, req_id, Token(text=text, token_id=token_id))])

    def stop_server(self) -> None:
        """Ask the I/O thread to send what is queued, then close the socket."""
        self._socket.send_multipart([b""])
        self._socket.close(linger=-1)
