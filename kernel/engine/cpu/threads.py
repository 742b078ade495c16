"""How many threads the CPU engine's step runs, decided at run time from how much its threads waited for a core.

A step's work is split across threads in one of two ways. A pure-decode step whose products are all GGUF block
formats is one job on the native library's own worker pool (native/pool.cpp): every thread runs the layer loop, taking
tasks from shared counters, with a wait on the work (not on every thread) between dependent ops. Any other step is
~300 parallel regions of torch's intra-op OpenMP pool (which the native ops share through at::parallel_for), each
ending in a barrier that waits for the team's slowest thread. Both read the count this module sets
(torch.set_num_threads) at each step. When other processes (agents, other work on the machine) want the same cores,
one of the team is often descheduled. Under OpenMP its partners spin at the barrier for GOMP_SPINCOUNT turns, then
sleep, and every region waits a scheduler time slice for it: measured on a 2-core box beside busy processes, 2
threads stepped up to 5x slower than 1 (bench/engine_threads.py). The pool loses less (the others take a descheduled
worker's share; only a task it holds is waited for), but two threads on cores that other work also wants are still
slower than one. On an idle box 2 threads step ~1.4-2x faster. So the count is chosen while running, from the engine
threads' own scheduler accounting.

The signal: the run-queue wait of this process's threads (/proc/self/task/*/schedstat, second field: time runnable but
not running) over the wall time of sampled steps, per thread of the team: waited = wait / (wall x threads). Idle
threads (the I/O loop, a sleeping pool) add nothing: only a runnable thread waits.

decide(state, waited, now, policy) is the pure policy: halve the threads after `drop_after` consecutive windows with
waited >= policy.high; double them (up to the maximum) after `raise_after` windows with waited <= policy.low, once a
hold time has passed since the last drop. A raise is a probe: if the next `confirm_after` windows are not all calm
and it drops again, the hold doubles (up to policy.max_hold_s), so a machine that stays busy costs one short window
at the larger count per max_hold_s; a confirmed raise resets the hold. It returns the new state and, when the count
changed, the reason (logged by the governor).

ThreadGovernor applies it to a running engine: after_step(wall_s) samples one step in every `sample_every_s` (a
sample reads one small file per thread, ~60 us for a few threads), closes a window after `window_samples` samples or
`window_s` of sampled steps, and calls torch.set_num_threads from the stepping thread (OpenMP's team size is that
thread's setting, and the native pool's job size). A maximum of one thread, adaptive=False, or schedstat unreadable
(a kernel without CONFIG_SCHED_INFO, a masked /proc): no governor work at all, the count stays fixed (the last logged
once). Nothing here holds module-level state.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

log = logging.getLogger(__name__)

_TASKS = Path("/proc/self/task")


@dataclass(frozen=True)
class ThreadPolicy:
    high: float = 0.2  # a team waiting this share of its step time for cores is contended
    low: float = 0.08  # at or below: the cores have room
    drop_after: int = 2  # consecutive contended windows before a drop
    raise_after: int = 3  # consecutive calm windows (and the hold passed) before a probe up
    confirm_after: int = 3  # calm windows after a raise that confirm it
    hold_s: float = 2.0  # after a drop, the least time before a probe up
    max_hold_s: float = 64.0


@dataclass(frozen=True)
class ThreadState:
    threads: int
    max_threads: int
    high_windows: int = 0
    low_windows: int = 0
    hold_s: float = 0.0  # the current hold (doubles on a failed probe)
    hold_until: float = 0.0
    probing: int = 0  # calm windows still needed to confirm the last raise; 0: not probing


def decide(state: ThreadState, waited: float, now: float, policy: ThreadPolicy) -> tuple[ThreadState, str | None]:
    """The state after one window in which the team waited `waited` of its step time per thread; the reason when the
    thread count changed, else None."""
    high = state.high_windows + 1 if waited >= policy.high else 0
    low = state.low_windows + 1 if waited <= policy.low else 0
    probing = max(state.probing - 1, 0) if waited <= policy.low else state.probing
    hold_s = state.hold_s or policy.hold_s
    if state.probing and not probing:  # the raise held: the next drop starts from the shortest hold
        hold_s = policy.hold_s
    state = replace(state, high_windows=high, low_windows=low, probing=probing, hold_s=hold_s)
    if high >= policy.drop_after and state.threads > 1:
        threads = max(state.threads // 2, 1)
        hold_s = min(state.hold_s * 2, policy.max_hold_s) if state.probing else policy.hold_s
        reason = f"threads waited {waited:.0%} of the step for a core (>= {policy.high:.0%})"
        if state.probing:
            reason += f"; the probe up failed, next in {hold_s:.0f} s"
        new = ThreadState(threads, state.max_threads, hold_s=hold_s, hold_until=now + hold_s)
        return new, reason
    if low >= policy.raise_after and state.threads < state.max_threads and now >= state.hold_until:
        threads = min(state.threads * 2, state.max_threads)
        new = replace(state, threads=threads, high_windows=0, low_windows=0, probing=policy.confirm_after)
        return new, f"threads waited {waited:.0%} of the step for a core (<= {policy.low:.0%}): probing up"
    return state, None


def runqueue_wait_ns(tasks: Path = _TASKS) -> int | None:
    """The run-queue wait summed over this process's threads (ns); None where schedstat cannot be read."""
    total, seen = 0, False
    try:
        names = os.listdir(tasks)
    except OSError:
        return None
    for tid in names:
        try:
            with open(tasks / tid / "schedstat", "rb") as f:
                total += int(f.read().split()[1])
            seen = True
        except (OSError, ValueError, IndexError):  # a thread that exited since the listing, or no schedstat
            continue
    return total if seen else None


class ThreadGovernor:
    """Applies decide() to a running engine (see the module docstring). Call after_step from the stepping thread."""

    def __init__(
        self,
        max_threads: int,
        set_threads: Callable[[int], None],
        policy: ThreadPolicy | None = None,
        read_wait: Callable[[], int | None] = runqueue_wait_ns,
        clock: Callable[[], float] = time.monotonic,
        sample_every_s: float = 0.05,
        window_samples: int = 4,
        window_s: float = 0.5,
        adaptive: bool = True,
    ):
        self.policy = policy or ThreadPolicy()
        self.state = ThreadState(max_threads, max_threads)
        self._set_threads, self._read_wait, self._clock = set_threads, read_wait, clock
        self._sample_every_s, self._window_samples, self._window_s = sample_every_s, window_samples, window_s
        self._enabled = adaptive and max_threads > 1 and read_wait() is not None
        if adaptive and max_threads > 1 and not self._enabled:
            log.info("engine threads: fixed at %d (no per-thread scheduler statistics to adapt from)", max_threads)
        self._next_sample = 0.0
        self._pending: int | None = None  # the wait read before the step being sampled
        self._wall = self._waited = 0.0
        self._samples = 0

    @property
    def threads(self) -> int:
        return self.state.threads

    def before_step(self) -> None:
        """Reads the wait counter when this step is to be sampled."""
        if self._enabled and self._clock() >= self._next_sample:
            self._pending = self._read_wait()

    def after_step(self, wall_s: float) -> None:
        """Accounts a sampled step; at a window's end, decides and applies the thread count."""
        if self._pending is None:
            return
        after = self._read_wait()
        now = self._clock()
        if after is not None:
            self._waited += max(after - self._pending, 0) / 1e9
            self._wall += wall_s * self.state.threads
            self._samples += 1
        self._pending, self._next_sample = None, now + self._sample_every_s
        if self._samples < self._window_samples and self._wall < self._window_s * self.state.threads:
            return
        waited = self._waited / self._wall if self._wall > 0 else 0.0
        self._wall = self._waited = 0.0
        self._samples = 0
        before = self.state.threads
        log.debug("engine threads: %d waited %.0f%% of the sampled steps for a core", before, 100 * waited)
        self.state, reason = decide(self.state, waited, now, self.policy)
        if self.state.threads != before:
            self._set_threads(self.state.threads)
            log.info("engine threads: %d -> %d (%s)", before, self.state.threads, reason)
