"""A service worker: one thread that owns a service (a memory manager, a storage manager) and runs its calls, fairly.

The kernel loop authorizes a call and hands the worker a job; the worker runs it against the service and answers
through its own outbox, so a slow embedding or an fsync never stalls decoding. A job's ProtocolError is its error
reply; any other exception answers `internal` for that job alone. The service is built inside the thread (SQLite
connections belong to the thread that made them); `ready` is set once it is built, and a service that cannot be built
answers every job with an error naming why, instead of taking the kernel down.

Fairness: jobs wait in lanes, one per owner (the agent's routing id: `Job.owner`, else `Job.identity`; work with
neither is the kernel's own lane), served round robin, one job per turn. So a job that reaches an idle lane waits for
at most the job in flight and one job of each other lane with work queued, however deep their backlogs. Each lane is
bounded (`busy` naming the per-agent limit when the caller's own lane is full, while other agents' lanes still accept)
and so is the total (`busy` naming the service's limit).

Shutdown: stop() lets the job in flight finish, then every queued job is answered `shutdown` at once (jobs with no
reply are dropped) and the service is closed: a kernel with full queues stops within one job's time, not after
draining them.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import zmq

from ipc.errors import ErrorCode, ProtocolError
from kernel.replies import Outbox

log = logging.getLogger("aiosd.services")

# A service thread (and the threads it starts: the embedder's OpenMP team inherits it) runs at this nice value: an
# agent flooding a service makes the kernel do CPU work (embeddings) on the cores the engine decodes on, and the
# engine's step, shared by every agent, goes first when they compete. Per thread on Linux; raising it needs no right.
SERVICE_NICE = 10
DEFAULT_MAX_QUEUED = 1024  # jobs queued on one service, all owners together
DEFAULT_MAX_PER_LANE = 64  # ... of one owner: the same depth as an agent's calls in flight (--max-calls-per-agent)


class Lane(enum.Enum):
    KERNEL = "kernel"  # the kernel's own follow-up work that belongs to no agent


class Refusal(enum.Enum):
    LANE_FULL = "lane_full"
    TOTAL_FULL = "total_full"
    CLOSED = "closed"


@dataclass(frozen=True)
class Job:
    identity: bytes | None  # where the reply goes; None for the kernel's own follow-up work (no reply)
    req_id: int | str | None
    run: Callable[[Any], Any]  # run(service) → the result body (None: the reply is Ack())
    owner: bytes | None = None  # whose lane it waits in, when that is not `identity` (an agent's follow-up work)

    @property
    def lane(self) -> Hashable:
        if self.owner is not None:
            return self.owner
        return self.identity if self.identity is not None else Lane.KERNEL


class FairQueue:
    """Lanes of jobs served round robin, bounded per lane and in total; thread-safe. take() blocks until a job is
    queued or the queue is closed (then None: what is still queued is for drain())."""

    def __init__(self, max_per_lane: int = DEFAULT_MAX_PER_LANE, max_total: int = DEFAULT_MAX_QUEUED):
        if not 0 < max_per_lane <= max_total:
            raise ValueError(f"need 0 < max_per_lane ({max_per_lane}) <= max_total ({max_total})")
        self.max_per_lane = max_per_lane
        self.max_total = max_total
        self._lanes: dict[Hashable, deque[Job]] = {}
        self._turns: deque[Hashable] = deque()  # the lanes with jobs queued, in the order they are served
        self._total = 0
        self._closed = False
        self._changed = threading.Condition()

    def put(self, job: Job) -> Refusal | None:
        """Queue the job at the end of its lane; the reason it was refused, or None."""
        with self._changed:
            if self._closed:
                return Refusal.CLOSED
            lane = self._lanes.get(job.lane)
            # the lane's own bound first: a flooder is told about its own limit, not the service's
            if lane is not None and len(lane) >= self.max_per_lane:
                return Refusal.LANE_FULL
            if self._total >= self.max_total:
                return Refusal.TOTAL_FULL
            if lane is None:
                lane = self._lanes[job.lane] = deque()
                self._turns.append(job.lane)  # a newly busy lane takes its turn after the lanes already waiting
            lane.append(job)
            self._total += 1
            self._changed.notify()
            return None

    def take(self) -> Job | None:
        """The next lane's oldest job, waiting for one; None once closed."""
        with self._changed:
            while not self._closed and not self._turns:
                self._changed.wait()
            if self._closed:
                return None
            key = self._turns.popleft()
            lane = self._lanes[key]
            job = lane.popleft()
            self._total -= 1
            if lane:
                self._turns.append(key)
            else:
                del self._lanes[key]
            return job

    def close(self) -> None:
        """Refuse new jobs and wake take(); queued jobs stay for drain()."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def drain(self) -> list[Job]:
        """Remove and return every queued job, in the order they would have been served."""
        with self._changed:
            jobs = []
            while self._turns:
                key = self._turns.popleft()
                lane = self._lanes[key]
                jobs.append(lane.popleft())
                if lane:
                    self._turns.append(key)
                else:
                    del self._lanes[key]
            self._total = 0
            return jobs

    def __len__(self) -> int:
        with self._changed:
            return self._total


class ServiceWorker:
    def __init__(
        self,
        name: str,
        context: zmq.Context,
        factory: Callable[[], Any],
        max_queued: int = DEFAULT_MAX_QUEUED,
        ack: Any = None,
        max_per_lane: int = DEFAULT_MAX_PER_LANE,
        nice: int = SERVICE_NICE,
    ):
        self.name = name
        self._nice = nice
        self._context = context
        self._factory = factory
        self._ack = ack
        self._jobs = FairQueue(min(max_per_lane, max_queued), max_queued)
        self._thread = threading.Thread(target=self._run, name=f"aiosd-{name}", daemon=True)
        self.ready = threading.Event()  # set once the service is built (or failed to be)
        self.broken: str | None = None  # why the service could not be built, once ready

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job in its owner's lane; ProtocolError(BUSY) when that lane or the service is full, SHUTDOWN once
        stopping."""
        refusal = self._jobs.put(job)
        if refusal is Refusal.LANE_FULL:
            raise ProtocolError(
                ErrorCode.BUSY,
                f"{self._jobs.max_per_lane} of your calls are queued on the {self.name} "
                f"service, its limit per agent: retry once some are answered",
            )
        if refusal is Refusal.TOTAL_FULL:
            raise ProtocolError(
                ErrorCode.BUSY,
                f"the {self.name} service is busy ({self._jobs.max_total} calls queued, its limit): retry later",
            )
        if refusal is Refusal.CLOSED:
            raise ProtocolError(ErrorCode.SHUTDOWN, f"the kernel is stopping: the {self.name} service takes no calls")

    def queued(self) -> int:
        return len(self._jobs)

    def stop(self) -> None:
        """Finish the job in flight, answer every queued job `shutdown`, close the service; returns once done."""
        self._jobs.close()
        if self._thread.is_alive():
            self._thread.join()
        elif self._thread.ident is None:  # never started: nothing will answer, so nothing is owed an answer
            self._jobs.drain()

    def _run(self) -> None:
        _lower_priority(self._nice)  # before the service is built: its threads are started from this one
        outbox = Outbox(self._context)
        service = None
        try:
            service = self._factory()
        except Exception as error:  # e.g. an unreadable data directory: calls get an error, the kernel lives
            log.exception("the %s service could not start", self.name)
            self.broken = f"the {self.name} service is unavailable: {error}"
        self.ready.set()
        try:
            while (job := self._jobs.take()) is not None:
                self._serve(service, job, outbox)
            dropped = self._jobs.drain()
            for job in dropped:
                if job.identity is not None:
                    outbox.error(
                        job.identity,
                        job.req_id,
                        ErrorCode.SHUTDOWN,
                        f"the kernel is stopping: this {self.name} call was not run",
                    )
            if dropped:
                log.info("%s: %d queued calls answered shutdown", self.name, len(dropped))
        finally:
            if service is not None and hasattr(service, "close"):
                service.close()
            outbox.close()

    def _serve(self, service, job: Job, outbox: Outbox) -> None:
        try:
            if self.broken is not None:
                raise ProtocolError(ErrorCode.INTERNAL, self.broken)
            result = job.run(service)
        except ProtocolError as error:
            if job.identity is not None:
                outbox.fail(job.identity, job.req_id, error)
            return
        except Exception:
            log.exception("%s job %r failed", self.name, job.req_id)
            if job.identity is not None:
                outbox.error(job.identity, job.req_id, ErrorCode.INTERNAL, f"the {self.name} service failed")
            return
        if job.identity is not None:
            outbox.result(job.identity, job.req_id, self._ack if result is None else result)


def _lower_priority(nice: int) -> None:
    """This thread's nice value raised to `nice` (never lowered: that would need a privilege)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, max(nice, os.getpriority(os.PRIO_PROCESS, tid)))
    except OSError as error:  # e.g. a sandbox without the call: the service runs at the kernel's priority
        log.warning("cannot lower the service thread's priority: %s", error)
