"""One attempt at a call on one replica: a streamed /v1/completions request read on a thread of its own, reporting
what arrives to the engine's queue. The kernel thread never waits on HTTP: it starts an attempt, and step() drains the
queue.

An attempt reports Streamed (tokens and their text) any number of times, then exactly one of Ended (the server
finished the sequence) or Failed. Failed.replica_fault says whether the replica is to blame (unreachable, connection
cut mid-stream, 502/503/504: the call may be resumed elsewhere) or the request (another error status: resuming it
elsewhere would fail the same way). A cancelled attempt reports nothing more once cancel() returned... except what its
thread had already queued: the engine ignores reports from attempts it no longer holds.

Text without token ids (a server that streams text only) is tokenized here, off the kernel thread, with the engine's
tokenizer; a token that straddles two chunks may then be counted differently from the server's own count.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from kernel.engine.core.interface import FinishReason
from kernel.engine.remote.chunks import parse_chunk
from kernel.engine.remote.http import EventStream, HTTPFailure
from kernel.engine.remote.replica import Replica

log = logging.getLogger("aiosd.remote")

_REPLICA_STATUSES = (502, 503, 504)  # the server (or a proxy before it) cannot serve now: try another


@dataclass(frozen=True)
class Streamed:
    attempt: Attempt
    ids: list[int]
    text: str


@dataclass(frozen=True)
class Ended:
    attempt: Attempt
    finish: FinishReason


@dataclass(frozen=True)
class Failed:
    attempt: Attempt
    message: str
    replica_fault: bool


class Attempt:
    def __init__(
        self,
        req_id: str,
        replica: Replica,
        body: dict,
        reports: queue.SimpleQueue,
        tokenize: Callable[[str], list[int]],
        read_timeout_s: float,
    ):
        self.req_id = req_id
        self.replica = replica
        self._reports = reports
        self._tokenize = tokenize
        self._stream = EventStream(replica.endpoint, f"{replica.endpoint.base_path}/completions", body, read_timeout_s)
        self._thread = threading.Thread(target=self._run, name=f"aiosd-remote-{req_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        self._stream.cancel()

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    def _run(self) -> None:
        try:
            for event in self._stream.events():
                try:
                    chunk = parse_chunk(event)
                except ValueError as error:
                    self._reports.put(Failed(self, f"{self.replica.name}: {error}", replica_fault=False))
                    return
                ids = chunk.ids if chunk.ids is not None else self._tokenize(chunk.text)
                if ids or chunk.text:
                    self._reports.put(Streamed(self, ids, chunk.text))
                if chunk.finish is not None:
                    self._reports.put(Ended(self, chunk.finish))
                    return
            if not self._stream.cancelled:  # the body ended without a finish reason: the server went away
                self._reports.put(
                    Failed(self, f"{self.replica.name} closed the stream before the call finished", replica_fault=True)
                )
        except HTTPFailure as error:
            fault = error.status is None or error.status in _REPLICA_STATUSES
            self._reports.put(Failed(self, str(error), replica_fault=fault))
        except Exception as error:  # a bug here must end this call, not leave it hanging
            log.exception("remote call %s failed", self.req_id)
            self._reports.put(Failed(self, f"{type(error).__name__}: {error}", replica_fault=False))
