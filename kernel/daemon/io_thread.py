"""The kernel's socket I/O: one thread owns the ROUTER socket, so the kernel loop never blocks on the network.

Inbound: recv → decode and validate (ipc/codec.py) → the inbox queue, as Inbound items; malformed frames are answered
with an error reply right here and never reach the loop. Outbound: the loop pushes [routing id, frame] pairs into an
inproc PUSH socket (the outbox); this thread forwards them to the ROUTER. An empty message on the outbox means stop:
everything queued before it is still sent.
"""
from __future__ import annotations

import errno
import logging
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass

import zmq

from ipc.address import ipc_path
from ipc.codec import DEFAULT_MAX_FRAME_BYTES, Envelope, decode_request, encode_error
from ipc.curve import ServerSecurity
from ipc.errors import ErrorCode, ProtocolError

log = logging.getLogger("aiosd.io")

OUTBOX_ADDRESS = "inproc://aiosd-outbox"
HARD_FRAME_LIMIT_FACTOR = 16     # frames this far over the limit drop the connection (zmq.MAXMSGSIZE) instead
LINGER_MS = 2000                 # how long final replies may take to leave at shutdown


@dataclass(frozen=True)
class Inbound:
    identity: bytes              # the sender's routing id
    envelope: Envelope
    received: float              # time.monotonic() at receipt


class AddressInUse(RuntimeError):
    """Another live kernel already serves the address."""


class SocketServer:
    def __init__(self, context: zmq.Context, address: str, inbox: queue.SimpleQueue,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, security: ServerSecurity | None = None):
        self.address = address
        self._inbox = inbox
        self._max_frame_bytes = max_frame_bytes
        self._socket_file = ipc_path(address)
        if self._socket_file:
            _claim_socket_file(self._socket_file)
        self._router = context.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.MAXMSGSIZE, max_frame_bytes * HARD_FRAME_LIMIT_FACTOR)
        self._router.setsockopt(zmq.SNDHWM, 0)   # never drop a token or a final reply to a slow reader
        self._router.setsockopt(zmq.RCVHWM, 0)
        if security is not None:     # CURVE options count only if set before bind
            security.secure(self._router)
        self._router.bind(address)
        self._outbox = context.socket(zmq.PULL)
        self._outbox.bind(OUTBOX_ADDRESS)
        self._thread = threading.Thread(target=self._serve, name="aiosd-io", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._outbox, zmq.POLLIN)
        try:
            while True:
                ready = dict(poller.poll())
                if self._outbox in ready and not self._forward_outbox():
                    break
                if self._router in ready:
                    self._receive()
        finally:
            self._router.close(linger=LINGER_MS)
            self._outbox.close(linger=0)
            if self._socket_file and os.path.exists(self._socket_file):
                os.unlink(self._socket_file)
            log.info("socket closed")

    def _forward_outbox(self) -> bool:
        """Send everything the loop queued; False once the stop message is seen."""
        while self._outbox.get(zmq.EVENTS) & zmq.POLLIN:      # cheaper than a non-blocking recv raising Again
            frames = self._outbox.recv_multipart()
            if frames == [b""]:
                return False
            self._router.send_multipart(frames)
        return True

    def _receive(self) -> None:
        while self._router.get(zmq.EVENTS) & zmq.POLLIN:
            frames = self._router.recv_multipart()
            identity, payload = frames[0], frames[1:]
            try:
                if len(payload) != 1:
                    raise ProtocolError(ErrorCode.BAD_FRAME, f"expected one frame per message, got {len(payload)}")
                envelope = decode_request(payload[0], self._max_frame_bytes)
            except ProtocolError as error:
                log.warning("rejected frame from %s: %s", identity.hex(), error)
                self._router.send_multipart([identity, encode_error(error.req_id, error.code, error.message)])
                continue
            self._inbox.put(Inbound(identity, envelope, time.monotonic()))


def _claim_socket_file(path: str) -> None:
    """Create the socket's directory (owner only); remove a stale socket file, refuse one a live kernel serves."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as error:
        if error.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise
        os.unlink(path)          # left behind by a kernel that died: nobody is listening
        return
    finally:
        probe.close()
    raise AddressInUse(f"a kernel is already serving ipc://{path}")
