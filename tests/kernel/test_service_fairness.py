"""Service workers are fair per agent and stop promptly: a real ServiceWorker, a slow fake service whose jobs wait on
a gate, and the replies read off the worker's real outbox socket (the I/O thread's side of it, bound here)."""

from __future__ import annotations

import threading

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from ipc.codec import unpack_reply
from ipc.errors import ErrorCode, ProtocolError
from ipc.messages import REPLY_RESULT, Ack
from kernel.replies import OUTBOX_ADDRESS
from kernel.services.worker import FairQueue, Job, Lane, Refusal, ServiceWorker
from tests.kernel.harness import wait_until

FLOODER, VICTIM, OTHER = b"flooder", b"victim", b"other"
WAIT_S = 60.0


class SlowService:
    """Records the order jobs ran in; each job waits for `gate` (set by the test) before it returns."""

    def __init__(self):
        self.ran: list[tuple[bytes, int]] = []
        self.gate = threading.Event()
        self.started = threading.Event()
        self.closed = False

    def job(self, who: bytes, n: int):
        def run(service):
            service.started.set()
            assert service.gate.wait(WAIT_S)
            service.ran.append((who, n))

        return run

    def close(self):
        self.closed = True


@pytest.fixture
def outbox():
    """The I/O thread's end of the outbox: every reply any worker sends, as (identity, envelope)."""
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.bind(OUTBOX_ADDRESS)

    def recv():
        assert pull.poll(WAIT_S * 1000), "no reply"
        identity, frame = pull.recv_multipart()
        return identity, unpack_reply(frame)

    yield context, recv
    pull.close(linger=0)
    context.term()


def _worker(context, service, **limits) -> ServiceWorker:
    worker = ServiceWorker("slow", context, lambda: service, ack=Ack(), **limits)
    worker.start()
    assert worker.ready.wait(WAIT_S)
    return worker


def test_a_victims_job_runs_within_one_job_of_a_flooders_thousand(outbox):
    context, recv = outbox
    service = SlowService()
    worker = _worker(context, service, max_queued=4096, max_per_lane=2048)
    worker.submit(Job(FLOODER, 0, service.job(FLOODER, 0)))
    assert service.started.wait(WAIT_S)  # the flooder's first job is in flight, held by the gate
    for n in range(1, 1001):
        worker.submit(Job(FLOODER, n, service.job(FLOODER, n)))
    worker.submit(Job(VICTIM, 1, service.job(VICTIM, 1)))
    assert worker.queued() == 1001
    service.gate.set()
    replies = [recv() for _ in range(1002)]
    assert sorted(r[0] for r in replies) == [FLOODER] * 1001 + [VICTIM]
    # in flight, at most one of the flooder's queued jobs, then the victim's
    assert service.ran.index((VICTIM, 1)) <= 2
    assert [n for who, n in service.ran if who == FLOODER] == list(range(1001))  # each lane stays in order
    worker.stop()
    assert service.closed


def test_a_full_lane_answers_busy_naming_its_limit_while_another_agents_lane_accepts(outbox):
    context, recv = outbox
    service = SlowService()
    worker = _worker(context, service, max_queued=100, max_per_lane=8)
    worker.submit(Job(FLOODER, 0, service.job(FLOODER, 0)))
    assert service.started.wait(WAIT_S)
    for n in range(1, 9):
        worker.submit(Job(FLOODER, n, service.job(FLOODER, n)))
    with pytest.raises(ProtocolError) as refused:
        worker.submit(Job(FLOODER, 9, service.job(FLOODER, 9)))
    assert (
        refused.value.code is ErrorCode.BUSY and "8" in refused.value.message and "per agent" in refused.value.message
    )
    # the flooder's follow-up work waits in its lane too: refused as well
    with pytest.raises(ProtocolError):
        worker.submit(Job(None, None, service.job(FLOODER, 10), owner=FLOODER))
    worker.submit(Job(VICTIM, 1, service.job(VICTIM, 1)))  # another lane: accepted
    worker.submit(Job(None, None, service.job(b"kernel", 1)))  # the kernel's own lane: accepted
    service.gate.set()
    answered = {recv()[0] for _ in range(10)}
    assert answered == {FLOODER, VICTIM}
    worker.stop()
    assert (b"kernel", 1) in service.ran


def test_the_total_bound_answers_busy_naming_the_services_limit(outbox):
    context, _ = outbox
    service = SlowService()
    worker = _worker(context, service, max_queued=6, max_per_lane=4)
    worker.submit(Job(FLOODER, 0, service.job(FLOODER, 0)))
    assert service.started.wait(WAIT_S)
    for who in (FLOODER, OTHER):
        for n in range(1, 4):
            worker.submit(Job(who, n, service.job(who, n)))
    with pytest.raises(ProtocolError) as refused:
        worker.submit(Job(VICTIM, 1, service.job(VICTIM, 1)))
    assert refused.value.code is ErrorCode.BUSY and "6 calls" in refused.value.message
    service.gate.set()
    worker.stop()


def test_stop_with_full_queues_finishes_the_job_in_flight_and_answers_shutdown_to_each_queued_job(outbox):
    context, recv = outbox
    service = SlowService()
    worker = _worker(context, service, max_queued=1024, max_per_lane=512)
    worker.submit(Job(FLOODER, 0, service.job(FLOODER, 0)))
    assert service.started.wait(WAIT_S)
    for n in range(1, 513):
        worker.submit(Job(FLOODER, n, service.job(FLOODER, n)))
    for n in range(1, 101):
        worker.submit(Job(VICTIM, n, service.job(VICTIM, n)))
        worker.submit(Job(None, None, service.job(b"kernel", n)))  # no reply owed: dropped
    stopper = threading.Thread(target=worker.stop)
    stopper.start()

    def refused_shutdown() -> bool:  # stopping: no new work (a probe that owes no reply, dropped if queued)
        try:
            worker.submit(Job(None, None, service.job(OTHER, 1), owner=OTHER))
        except ProtocolError as error:
            return error.code is ErrorCode.SHUTDOWN
        return False

    wait_until(refused_shutdown, what="stop() to close the queue")
    service.gate.set()  # the job in flight finishes...
    stopper.join(WAIT_S)
    assert not stopper.is_alive()
    assert service.ran == [(FLOODER, 0)] and service.closed  # ... and nothing queued ran
    replies = [recv() for _ in range(1 + 512 + 100)]
    first_identity, first = replies[0]
    assert (first_identity, first["id"], first["type"]) == (FLOODER, 0, REPLY_RESULT)
    codes = {(identity, reply["id"]): reply["body"]["code"] for identity, reply in replies[1:]}
    assert set(codes) == {(FLOODER, n) for n in range(1, 513)} | {(VICTIM, n) for n in range(1, 101)}
    assert set(codes.values()) == {ErrorCode.SHUTDOWN.value}


def test_a_service_that_cannot_be_built_answers_each_job_with_an_error(outbox):
    context, recv = outbox

    def broken():
        raise OSError("no such directory")

    worker = ServiceWorker("broken", context, broken)
    worker.start()
    assert worker.ready.wait(WAIT_S) and "no such directory" in worker.broken
    worker.submit(Job(VICTIM, 1, lambda service: None))
    identity, reply = recv()
    assert identity == VICTIM and reply["body"]["code"] == ErrorCode.INTERNAL.value
    worker.stop()


# -- the queue alone: its fairness bound over arbitrary interleavings of arrivals and services ----------------------

OWNERS = [b"a", b"b", b"c", None]  # None: the kernel's own lane
operations = st.lists(st.one_of(st.sampled_from(OWNERS), st.just("take")), max_size=300)


@settings(max_examples=300, deadline=None)
@given(operations, st.integers(1, 6), st.integers(1, 12))
def test_a_job_waits_for_at_most_one_job_of_each_other_lane_per_job_ahead_of_it_in_its_own(ops, per_lane, total):
    per_lane = min(per_lane, total)
    fair = FairQueue(per_lane, total)
    queued: dict = {}  # lane → its jobs' serials, oldest first (the model)
    served_since: dict[int, dict] = {}  # serial → lane → jobs of that lane served since it arrived
    ahead_at_arrival: dict[int, int] = {}
    for serial, op in enumerate(ops):
        if op == "take":
            job = fair.take() if len(fair) else None
            if job is None:
                assert not any(queued.values())
                continue
            lane = job.lane
            assert queued[lane][0] == job.req_id  # first in, first out within a lane
            queued[lane].pop(0)
            # the bound: at most (jobs ahead of it in its lane + 1) jobs of any other lane went first
            for other, count in served_since.pop(job.req_id).items():
                assert count <= ahead_at_arrival[job.req_id] + 1, (other, count)
            for waiting in served_since.values():
                waiting[lane] = waiting.get(lane, 0) + 1
            continue
        job = Job(op, serial, lambda service: None)
        lane = job.lane
        size, total_now = len(queued.get(lane, [])), sum(map(len, queued.values()))
        refusal = fair.put(job)
        expected = Refusal.LANE_FULL if size >= per_lane else Refusal.TOTAL_FULL if total_now >= total else None
        assert refusal is expected
        if refusal is None:
            queued.setdefault(lane, []).append(serial)
            served_since[serial] = {}
            ahead_at_arrival[serial] = size
    assert len(fair) == sum(map(len, queued.values()))
    fair.close()
    assert fair.take() is None
    rest = fair.drain()
    assert sorted(job.req_id for job in rest) == sorted(s for lane in queued.values() for s in lane)
    assert len(fair) == 0 and fair.put(Job(b"a", 0, lambda s: None)) is Refusal.CLOSED


def test_a_jobs_lane_is_its_owner_then_its_identity_then_the_kernels():
    assert Job(b"x", 1, lambda s: None).lane == b"x"
    assert Job(None, None, lambda s: None, owner=b"y").lane == b"y"
    assert Job(b"x", 1, lambda s: None, owner=b"y").lane == b"y"
    assert Job(None, None, lambda s: None).lane is Lane.KERNEL


def test_a_service_runs_below_the_engines_priority():
    """The worker (and what its service starts) yields the cores to the engine's step when they compete."""
    import os
    import threading

    import zmq

    from kernel.services.worker import SERVICE_NICE, ServiceWorker

    seen = {}

    def build():
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        return object()

    context = zmq.Context()
    worker = ServiceWorker("probe", context, build)
    worker.start()
    try:
        assert worker.ready.wait(60)
        assert seen["nice"] >= SERVICE_NICE > os.getpriority(os.PRIO_PROCESS, 0)
    finally:
        worker.stop()
        context.term()
