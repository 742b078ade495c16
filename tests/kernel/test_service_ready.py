"""Services.start() returns once every service is built and warm (the ready line follows it), within its bound."""

from __future__ import annotations

import threading

import zmq

from ipc.codec import unpack_reply
from ipc.messages import REPLY_RESULT, Ack
from kernel.memory.embedder import HashEmbedder
from kernel.replies import OUTBOX_ADDRESS
from kernel.services.factory import WARM_UP_TEXT, Services, build_services
from kernel.services.worker import Job, ServiceWorker

WAIT_S = 60.0


class RecordingEmbedder(HashEmbedder):
    """HashEmbedder that notes every batch it embeds, and on which thread."""

    def __init__(self):
        super().__init__()
        self.batches: list[tuple[list[str], str]] = []

    def embed(self, texts):
        self.batches.append((list(texts), threading.current_thread().name))
        return super().embed(texts)


def test_start_returns_with_every_service_built_and_the_embedder_warmed_on_its_worker(tmp_path):
    context = zmq.Context()
    embedder = RecordingEmbedder()
    services = build_services(context, str(tmp_path / "data"), None, embedder=embedder)
    try:
        services.start()
        assert all(worker.ready.is_set() and worker.broken is None for worker in services.workers)
        assert embedder.batches == [([WARM_UP_TEXT], "aiosd-memory")]
    finally:
        services.stop()
        context.term()


def test_a_service_that_fails_to_build_is_ready_and_broken_and_start_returns(tmp_path):
    context = zmq.Context()
    services = build_services(
        context, str(tmp_path / "data"), None, embedder=HashEmbedder(), storage_options={"no_such_option": 1}
    )
    try:
        services.start()
        storage = next(worker for worker in services.workers if worker.name == "storage")
        assert storage.ready.is_set() and "no_such_option" in storage.broken
    finally:
        services.stop()
        context.term()


def test_start_is_bounded_and_a_late_services_calls_wait_for_it_then_are_answered():
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.bind(OUTBOX_ADDRESS)
    gate = threading.Event()

    def slow_build():
        assert gate.wait(WAIT_S)
        return object()

    worker = ServiceWorker("slow", context, slow_build, ack=Ack())
    services = Services(syscalls=None, workers=[worker], ready_timeout_s=0.05)
    try:
        services.start()  # returns at its bound though the build has not finished
        assert not worker.ready.is_set()
        worker.submit(Job(b"agent", 1, lambda service: None))
        gate.set()
        assert pull.poll(WAIT_S * 1000)
        identity, frame = pull.recv_multipart()
        assert identity == b"agent" and unpack_reply(frame)["type"] == REPLY_RESULT
    finally:
        gate.set()
        services.stop()
        pull.close(linger=0)
        context.term()
