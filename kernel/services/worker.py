"""A service worker: one thread that owns a service (a memory manager, a storage manager) and runs its calls in order.

The kernel loop authorizes a call and hands the worker a job; the worker runs it against the service and answers
through its own outbox, so a slow embedding or an fsync never stalls decoding. The queue is bounded: a full queue
answers `busy` at once. A job's ProtocolError is its error reply; any other exception answers `internal` for that job
alone. The service is built inside the thread (SQLite connections belong to the thread that made them) and a service
that cannot be built answers every job with an error naming why, instead of taking the kernel down.
"""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable

import zmq

from ipc.errors import ErrorCode, ProtocolError
from kernel.daemon.outbox import Outbox

log = logging.getLogger("aiosd.services")

DEFAULT_MAX_QUEUED = 1024


@dataclass(frozen=True)
class Job:
    identity: bytes | None           # where the reply goes; None for the kernel's own follow-up work (no reply)
    req_id: int | str | None
    run: Callable[[Any], Any]        # run(service) → the result body (None: the reply is Ack())


class ServiceWorker:
    def __init__(self, name: str, context: zmq.Context, factory: Callable[[], Any],
                 max_queued: int = DEFAULT_MAX_QUEUED, ack: Any = None):
        self.name = name
        self._context = context
        self._factory = factory
        self._ack = ack
        self._queue: queue.Queue = queue.Queue(max_queued)
        self._thread = threading.Thread(target=self._run, name=f"aiosd-{name}", daemon=True)
        self.ready = threading.Event()       # set once the service is built (or failed to be)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job; ProtocolError(BUSY) when the queue is full."""
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise ProtocolError(ErrorCode.BUSY, f"the {self.name} service is busy: retry later") from None

    def stop(self) -> None:
        """Run what is queued, then close the service. The sentinel waits for room: nothing queued is dropped."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        outbox = Outbox(self._context)
        service, broken = None, None
        try:
            service = self._factory()
        except Exception as error:       # e.g. an unreadable data directory: calls get an error, the kernel lives
            log.exception("the %s service could not start", self.name)
            broken = f"the {self.name} service is unavailable: {error}"
        self.ready.set()
        try:
            while (job := self._queue.get()) is not None:
                self._serve(service, broken, job, outbox)
        finally:
            if service is not None and hasattr(service, "close"):
                service.close()
            outbox.close()

    def _serve(self, service, broken: str | None, job: Job, outbox: Outbox) -> None:
        try:
            if broken is not None:
                raise ProtocolError(ErrorCode.INTERNAL, broken)
            result = job.run(service)
        except ProtocolError as error:
            if job.identity is not None:
                outbox.error(job.identity, job.req_id, error.code, error.message)
            return
        except Exception:
            log.exception("%s job %r failed", self.name, job.req_id)
            if job.identity is not None:
                outbox.error(job.identity, job.req_id, ErrorCode.INTERNAL, f"the {self.name} service failed")
            return
        if job.identity is not None:
            outbox.result(job.identity, job.req_id, self._ack if result is None else result)
