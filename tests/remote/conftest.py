"""Real llama.cpp servers (xllamacpp, bench/llama_server.py) on 127.0.0.1 with the bundled SmolLM2 GGUF, one thread
each: a pair started once per session, a victim of its own for each test that kills one; and a helper that steps a
RemoteEngine until its calls finish."""

from __future__ import annotations

import time

import pytest

from bench.llama_server import LlamaServer
from kernel.engine.core.interface import TokenEvent
from kernel.engine.remote.tokenizer import load_tokenizer

pytest.importorskip("xllamacpp")


@pytest.fixture(scope="session")
def pair(tmp_path_factory):
    """Two replicas of two slots each, shared by every test here (tests must not kill them)."""
    workdir = tmp_path_factory.mktemp("llama")
    with LlamaServer(workdir / "a.log", slots=2) as a, LlamaServer(workdir / "b.log", slots=2) as b:
        yield a, b


@pytest.fixture(scope="session")
def tokenizer():
    """The served model's tokenizer, loaded once (reading the GGUF's vocabulary takes seconds)."""
    return load_tokenizer(None, "")[0]


@pytest.fixture
def victim(tmp_path):
    """A replica of its own, for a test to kill."""
    with LlamaServer(tmp_path / "victim.log", slots=2) as server:
        yield server


def drive(engine, until, timeout_s: float = 120.0, on_event=None) -> dict[str, list[TokenEvent]]:
    """Step the engine, collecting each call's events, until until(events) holds; finished calls are aborted (as the
    kernel does after a final event)."""
    events: dict[str, list[TokenEvent]] = {}
    deadline = time.monotonic() + timeout_s
    while not until(events):
        assert time.monotonic() < deadline, f"timed out; events so far: {events}"
        for event in engine.step():
            events.setdefault(event.req_id, []).append(event)
            if on_event is not None:
                on_event(event)
            if event.finished:
                engine.abort(event.req_id)
    return events


def finished(*req_ids):
    return lambda events: all(events.get(r) and events[r][-1].finished for r in req_ids)


def tokens(events: list[TokenEvent]) -> list[int]:
    return [e.token_id for e in events if e.token_id >= 0]
