"""The kernel's socket I/O: one thread owns the ROUTER socket, so the kernel loop never blocks on the network.

Inbound: recv → decode and validate (ipc/codec.py) → the loop's inbox, as Inbound items; LLM calls (and their cancels,
and connection events, to keep their order: the syscall table's PREPROCESSED, ipc/syscalls.py) pass through the
preprocessor, which tokenizes them. Malformed frames are
answered with an error reply right here and never reach the loop. Every frame is handled under one guard: whatever a
frame does, it is answered (or dropped, if it names no request) and logged, and this thread goes on. A hello carries
the peer the kernel saw (SO_PEERCRED uid/pid on ipc://, the Curve key's name on tcp://); the socket monitor turns a
closed connection into ConnectionClosed (kernel/daemon/connections.py). Connections are bounded per principal and in
all by the descriptor budget (kernel/daemon/limits.py ConnectionBudget): over it, and when silent past the hello
deadline, this thread drops them (ConnectionTracker says which, shut_down does it); drops are logged at most once per
DROP_LOG_S, with their count, so a flood cannot flood the log.

Outbound: threads push [routing id, frame] pairs into an inproc PUSH socket (their Outbox); this thread forwards them
to the ROUTER. Each peer's send queue is bounded (SEND_HWM messages): a peer that stops reading fills it, its replies
are dropped from then on and the loop hears ConnectionStalled once, to cancel its calls, so kernel memory stays
bounded. An empty message on the outbox means stop: everything queued before it is still sent.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time

import zmq
from zmq.utils.monitor import parse_monitor_message

from ipc import runtime_dir
from ipc.address import ipc_path
from ipc.codec import DEFAULT_MAX_FRAME_BYTES, decode_request, encode_error, encode_protocol_error
from ipc.curve import ServerSecurity
from ipc.errors import ErrorCode, ProtocolError
from ipc.syscalls import PREPROCESSED
from kernel.daemon.connections import ConnectionTracker, FdPressure, shut_down
from kernel.daemon.inbound import ConnectionClosed, ConnectionStalled, Inbound, Inbox, Peer
from kernel.daemon.limits import ConnectionBudget
from kernel.daemon.preprocess import Preprocessor
from kernel.replies import OUTBOX_ADDRESS

log = logging.getLogger("aiosd.io")

HARD_FRAME_FACTOR = 4  # frames this far over the limit drop the connection (zmq.MAXMSGSIZE)
LINGER_MS = 2000  # how long final replies may take to leave at shutdown
SEND_HWM = 10_000  # messages queued to one peer: ~20 s of tokens for 16 streams; then it is stalled
RECV_HWM = 1_000  # messages queued from one peer before libzmq stops reading its connection
MONITOR_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED
PAUSED_POLL_MS = 50  # how often a kernel that stopped listening looks whether it may listen again
PRESSURE_EVERY = 8  # monitor events handled between two looks at the descriptor table
BATCH = 256  # frames moved per direction per turn: a flood one way cannot starve the other
DROP_LOG_S = 1.0  # at most one warning per second about dropped connections


class AddressInUse(RuntimeError):
    """Another live kernel already serves the address."""


class SocketServer:
    def __init__(
        self,
        context: zmq.Context,
        address: str,
        inbox: Inbox,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        security: ServerSecurity | None = None,
        prepare=None,
        budget: ConnectionBudget | None = None,
    ):
        self.address = address
        self._inbox = inbox
        self._max_frame_bytes = max_frame_bytes
        self._socket_file = ipc_path(address)
        if self._socket_file:
            _claim_socket_file(self._socket_file)
        self._router = context.socket(zmq.ROUTER)
        # libzmq assembles a message's parts before we see any and cannot cap their number: each part is capped (over
        # it, the connection drops) so a frame up to 4x the limit is still answered too_large, not cut off
        self._router.setsockopt(zmq.MAXMSGSIZE, max_frame_bytes * HARD_FRAME_FACTOR)
        self._router.setsockopt(zmq.SNDHWM, SEND_HWM)
        self._router.setsockopt(zmq.RCVHWM, RECV_HWM)
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a full or vanished peer raises instead of silence
        if security is not None:  # CURVE options count only if set before bind
            security.secure(self._router)
        self._monitor = _monitor_socket(self._router)
        self._router.bind(address)
        self._outbox = context.socket(zmq.PULL)
        self._outbox.bind(OUTBOX_ADDRESS)
        self._connections = ConnectionTracker(budget)
        self._pressure = FdPressure(self._connections.budget.fd_limit, self._connections.budget.reserve)
        self._listening = True  # False while the brake is on (unbound), until the count is back down
        self._listener_closed = False  # the unbound listener's CLOSED event seen: binding again is safe
        self._drops_logged = (0, 0.0)  # (tracker.dropped, time) at the last warning about drops
        self._stalled: set[bytes] = set()
        self._preprocessor = Preprocessor(context, inbox, prepare)
        self._thread = threading.Thread(target=self._serve, name="aiosd-io", daemon=True)

    def start(self) -> None:
        self._preprocessor.start()
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _serve(self) -> None:
        poller = zmq.Poller()
        for sock in (self._router, self._outbox, self._monitor):
            poller.register(sock, zmq.POLLIN)
        try:
            while True:
                ready = dict(poller.poll(self._poll_timeout_ms()))
                if self._outbox in ready and not self._forward_outbox():
                    break
                if self._monitor in ready:
                    self._drain_monitor()
                if self._router in ready:
                    self._receive()
                self._reap_silent()
                self._check_pressure()
        finally:
            self._preprocessor.stop()
            self._router.disable_monitor()
            self._monitor.close(linger=0)
            self._router.close(linger=LINGER_MS)
            self._outbox.close(linger=0)
            if self._socket_file and os.path.exists(self._socket_file):
                os.unlink(self._socket_file)
            log.info("socket closed")

    # -- outbound ------------------------------------------------------------------------------------------------

    def _forward_outbox(self) -> bool:
        """Send up to BATCH frames the threads queued; False once the stop message is seen."""
        for _ in range(BATCH):
            if not self._outbox.get(zmq.EVENTS) & zmq.POLLIN:  # cheaper than a non-blocking recv raising Again
                break
            frames = self._outbox.recv_multipart()
            if frames == [b""]:
                self._drain_outbox()
                return False
            self._send(frames)
        return True

    def _drain_outbox(self) -> None:
        """At stop: send what the other threads queued before it. The stop comes from the loop's own outbox after the
        service workers stopped, but each thread pushes through its own socket and the PULL side takes them fairly, not
        in time order, so a worker's last replies can still wait behind the stop; they are all queued by then."""
        while self._outbox.get(zmq.EVENTS) & zmq.POLLIN:
            frames = self._outbox.recv_multipart()
            if frames != [b""]:
                self._send(frames)

    def _send(self, frames: list[bytes]) -> None:
        identity = frames[0]
        try:
            self._router.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:  # the peer's queue is full: it stopped reading
            if identity not in self._stalled:
                self._stalled.add(identity)
                log.warning("peer %s stopped reading; dropping its replies and cancelling its calls", identity.hex())
                self._preprocessor.put(ConnectionStalled(identity))
        except zmq.ZMQError as error:
            if error.errno != errno.EHOSTUNREACH:  # a peer gone before its reply: nothing to deliver to
                log.error("send to %s failed: %s", identity.hex(), error)

    # -- inbound -------------------------------------------------------------------------------------------------

    def _drain_monitor(self) -> None:
        handled = 0
        while self._monitor.get(zmq.EVENTS) & zmq.POLLIN:
            event = parse_monitor_message(self._monitor.recv_multipart())
            if event["event"] == zmq.EVENT_ACCEPTED:
                self._shut_down(self._connections.accepted(event["value"], time.monotonic()))
                handled += 1
                if handled % PRESSURE_EVERY == 0:  # the events lag the accepts: look at the table itself
                    self._check_pressure()
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self._closed(self._connections.disconnected(event["value"]))
            elif event["event"] == zmq.EVENT_CLOSED:
                self._listener_closed = True

    # -- connection limits ---------------------------------------------------------------------------------------

    def _poll_timeout_ms(self) -> int | None:
        if not self._listening:  # look again soon: nothing else wakes this thread when the count drops
            return PAUSED_POLL_MS
        deadline = self._connections.next_deadline()
        return None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000) + 1)

    def _check_pressure(self) -> None:
        """Stop listening near the descriptor limit (libzmq would abort on EMFILE), listen again once back down."""
        if self._listening and self._pressure.pressed():
            self._router.unbind(self.address)
            self._listening, self._listener_closed = False, False
            log.error(
                "%d or more descriptors open, near the limit of %d: not accepting connections until below %d",
                self._pressure.high,
                self._connections.budget.fd_limit,
                self._pressure.low,
            )
        elif not self._listening and self._listener_closed and self._pressure.relieved():
            # only after the old listener closed: closing, an ipc:// listener unlinks its path, the new one's too
            try:
                self._router.bind(self.address)
            except zmq.ZMQError as error:  # e.g. the address taken meanwhile: try again at the next look
                log.error("cannot listen on %s again: %s", self.address, error)
                return
            self._listening = True
            log.warning("accepting connections again")

    def _reap_silent(self) -> None:
        """Drop the connections that have not said hello by their deadline."""
        deadline = self._connections.next_deadline()
        if deadline is None or deadline > time.monotonic():
            return
        self._drain_monitor()  # a descriptor's state up to date before acting on it
        self._shut_down(self._connections.expired(time.monotonic()))

    def _shut_down(self, victims: list[tuple[int, int | None]]) -> None:
        for fd, inode in victims:
            shut_down(fd, inode)
        if victims:
            dropped, logged_at = self._drops_logged
            now = time.monotonic()
            if now - logged_at >= DROP_LOG_S:
                budget = self._connections.budget
                log.warning(
                    "dropped %d connections (over %d per principal or %d in all, or silent for %.1f s "
                    "without hello); %d held",
                    self._connections.dropped - dropped,
                    budget.max_connections_per_principal,
                    budget.max_connections,
                    budget.hello_timeout_s,
                    len(self._connections),
                )
                self._drops_logged = (self._connections.dropped, now)

    def _closed(self, identity: bytes | None) -> None:
        if identity is not None:
            self._stalled.discard(identity)
            self._preprocessor.put(ConnectionClosed(identity))

    def _receive(self) -> None:
        for _ in range(BATCH):
            if not self._router.get(zmq.EVENTS) & zmq.POLLIN:
                break
            frames = self._router.recv_multipart(copy=False)
            try:
                self._handle(frames[0].bytes, frames)
            except Exception:  # a bug here must cost one frame, never the thread that serves every agent
                log.exception("frame from %s crashed its handling", frames[0].bytes.hex())

    def _handle(self, identity: bytes, frames: list[zmq.Frame]) -> None:
        req_id, peer, closed = None, None, []
        try:
            if len(frames) != 2:
                raise ProtocolError(ErrorCode.BAD_FRAME, f"expected one frame per message, got {len(frames) - 1}")
            envelope = decode_request(frames[1].bytes, self._max_frame_bytes)
            req_id = envelope.req_id
            if envelope.type == "hello":
                self._drain_monitor()  # brings the connection's state up to date before binding it
                peer = Peer.from_zmq(_property(frames[1], "Peer-Address"), _property(frames[1], "User-Id"))
                closed = self._connections.hello(frames[1].get(zmq.SRCFD), identity)
            if not self._inbox.try_reserve(identity):
                raise ProtocolError(
                    ErrorCode.BUSY, "the kernel's queue is full for this connection: retry later", req_id
                )
        except ProtocolError as error:
            log.warning("rejected frame from %s: %s", identity.hex(), error)
            self._send([identity, encode_protocol_error(error)])
        except Exception:
            log.exception("frame from %s failed before reaching the kernel", identity.hex())
            self._send([identity, encode_error(req_id, ErrorCode.INTERNAL, "the kernel failed on this frame")])
        else:
            item = Inbound(identity, envelope, time.monotonic(), peer)
            # only what needs preprocessing takes the extra thread hop (tens of µs on a busy 2-core machine);
            # a call's cancel and its connection's end follow it through the same queue, so they stay in order
            (self._preprocessor.put if envelope.type in PREPROCESSED else self._inbox.put)(item)
        for gone in closed:  # after the hello: a record made for a connection already gone ends at once
            self._closed(gone)


def _monitor_socket(router: zmq.Socket) -> zmq.Socket:
    """The ROUTER's monitor, unbounded: a full monitor queue (1,000 events by default) would drop events silently,
    and a lost DISCONNECTED would leave an agent record and a connection count behind forever."""
    address = f"inproc://aiosd-monitor-{id(router):x}"
    router.monitor(address, MONITOR_EVENTS)
    monitor = router.context.socket(zmq.PAIR)
    monitor.setsockopt(zmq.RCVHWM, 0)  # inproc: either side's 0 makes the pipe unbounded
    monitor.connect(address)
    return monitor


def _property(frame: zmq.Frame, name: str) -> str | None:
    """A message's metadata property, None when the connection has none (User-Id without ZAP, for one)."""
    try:
        return frame.get(name)
    except zmq.ZMQError:
        return None


def _claim_socket_file(path: str) -> None:
    """Create the socket's directory (owner only; the default runtime directory must be ours and private, or we
    refuse); remove a stale socket file, refuse one a live kernel serves."""
    directory = os.path.dirname(path) or "."
    if os.path.abspath(directory) == os.path.abspath(runtime_dir.default_path()):
        runtime_dir.private_dir(directory)
    else:  # a directory the operator chose: made if missing, never re-moded (it may be shared on purpose)
        os.makedirs(directory, mode=0o700, exist_ok=True)
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as error:
        if error.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise
        os.unlink(path)  # left behind by a kernel that died: nobody is listening
        return
    finally:
        probe.close()
    raise AddressInUse(f"a kernel is already serving ipc://{path}")
