"""The health prober: a background thread that checks every replica every `interval_s` and reports each change of
state (up → down, down → up) to the engine's queue, where the kernel thread acts on it at its next step.

A replica is down after `failures_to_down` probes in a row fail (one lost probe on a busy machine is not a dead server)
and up again after one success; coming back, it is described again (describe()), since it may have restarted with
another model or slot count, and its prefix cache is empty. Probes of a hung server time out after timeout_s, so a
server that stops answering without closing its connections is found too (its streams are then cut by the engine).
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass

from kernel.engine.remote.http import Endpoint, HTTPFailure
from kernel.engine.remote.replica import ServerInfo, describe, probe

log = logging.getLogger("aiosd.remote")


@dataclass(frozen=True)
class HealthChange:
    name: str  # the replica's name
    healthy: bool
    message: str  # why it is down, or "" when it came up
    info: ServerInfo | None = None  # what it serves, when it came up


class HealthProber:
    def __init__(
        self,
        endpoints: dict[str, Endpoint],
        healthy: dict[str, bool],
        reports: queue.SimpleQueue,
        interval_s: float = 1.0,
        timeout_s: float = 2.0,
        failures_to_down: int = 2,
    ):
        self._endpoints = endpoints
        self._healthy = dict(healthy)  # this thread's own view; the engine's is on the kernel thread
        self._misses = dict.fromkeys(endpoints, 0)
        self._reports = reports
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._failures_to_down = failures_to_down
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aiosd-remote-health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self._timeout_s * 3 + self._interval_s)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            for name, endpoint in self._endpoints.items():
                if self._stop.is_set():
                    return
                self._check(name, endpoint)

    def _check(self, name: str, endpoint: Endpoint) -> None:
        try:
            probe(endpoint, self._timeout_s)
            info = None if self._healthy[name] else describe(endpoint, self._timeout_s)
        except HTTPFailure as error:
            self._misses[name] += 1
            if self._healthy[name] and self._misses[name] >= self._failures_to_down:
                self._healthy[name] = False
                self._reports.put(HealthChange(name, False, f"health check failed: {error}"))
            return
        self._misses[name] = 0
        if not self._healthy[name]:
            self._healthy[name] = True
            self._reports.put(HealthChange(name, True, "", info))

    def mark(self, name: str, healthy: bool) -> None:
        """The engine found a replica dead on its own (a call's connection failed): probe it as such, so the prober
        reports it when it comes back. Called from the kernel thread; a plain dict store is atomic under the GIL."""
        self._healthy[name] = healthy
        self._misses[name] = 0
