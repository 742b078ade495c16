"""The engine's run-time thread count: decide() from injected wait measurements (no timings), the governor's windows
and application from an injected clock and wait counter, and the schedstat reader on schedstat-shaped files."""

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.engine.cpu.threads import ThreadGovernor, ThreadPolicy, ThreadState, decide, runqueue_wait_ns

POLICY = ThreadPolicy()
BUSY, CALM, MIDDLE = 0.6, 0.01, (POLICY.low + POLICY.high) / 2


def _run(state, waits, start=0.0, step=1.0):
    """Feeds one window per wait, a `step` of seconds apart; the states and reasons after each."""
    out = []
    for i, waited in enumerate(waits):
        state, reason = decide(state, waited, start + i * step, POLICY)
        out.append((state, reason))
    return out


def test_contention_halves_after_consecutive_windows_and_only_then():
    state = ThreadState(8, 8)
    (s1, r1), (s2, r2) = _run(state, [BUSY, BUSY])
    assert s1.threads == 8 and r1 is None  # one contended window is not enough
    assert s2.threads == 4 and "waited 60%" in r2
    # a calm window between two contended ones resets the count
    results = _run(ThreadState(2, 2), [BUSY, CALM, BUSY])
    assert all(s.threads == 2 for s, _ in results)


def test_keeps_dropping_to_one_and_never_below():
    results = _run(ThreadState(8, 8), [BUSY] * 20)
    counts = [s.threads for s, _ in results]
    assert counts[-1] == 1 and min(counts) == 1
    assert [c for c in counts if c not in (8, 4, 2, 1)] == []


def test_raises_after_calm_windows_once_the_hold_passed():
    (dropped, _), *_ = _run(ThreadState(2, 2, high_windows=POLICY.drop_after - 1), [BUSY], start=100.0)
    assert dropped.threads == 1 and dropped.hold_until == 100.0 + POLICY.hold_s
    # calm windows before the hold has passed change nothing
    early = _run(dropped, [CALM] * (POLICY.raise_after + 2), start=100.0, step=POLICY.hold_s / 10)
    assert all(s.threads == 1 for s, _ in early)
    late = _run(dropped, [CALM] * POLICY.raise_after, start=100.0 + POLICY.hold_s)
    assert [s.threads for s, _ in late] == [1] * (POLICY.raise_after - 1) + [2]
    assert "probing up" in late[-1][1]


def test_windows_between_the_thresholds_hold_the_count():
    for state in (ThreadState(4, 4), ThreadState(1, 4, hold_until=-1.0)):
        assert all(s.threads == state.threads for s, _ in _run(state, [MIDDLE] * 30))


def test_a_failed_probe_doubles_the_hold_up_to_the_cap_and_a_confirmed_one_resets_it():
    state, now, holds = ThreadState(1, 2, hold_s=POLICY.hold_s), 0.0, []
    for _ in range(12):  # probe up after the hold, find the cores busy, drop again
        now = state.hold_until
        for _ in range(POLICY.raise_after):
            state, _ = decide(state, CALM, now, POLICY)
        assert state.threads == 2 and state.probing
        for _ in range(POLICY.drop_after):
            state, reason = decide(state, BUSY, now, POLICY)
        assert state.threads == 1 and "probe up failed" in reason
        holds.append(state.hold_s)
    assert holds[0] == 2 * POLICY.hold_s and holds[-1] == POLICY.max_hold_s
    assert all(b == min(2 * a, POLICY.max_hold_s) for a, b in zip(holds, holds[1:]))
    # a probe that stays calm for confirm_after windows resets the hold: its next drop holds the shortest time
    now = state.hold_until
    for _ in range(POLICY.raise_after + POLICY.confirm_after):
        state, _ = decide(state, CALM, now, POLICY)
    assert state.threads == 2 and not state.probing
    for _ in range(POLICY.drop_after):
        state, _ = decide(state, BUSY, now, POLICY)
    assert state.threads == 1 and state.hold_s == POLICY.hold_s


@settings(max_examples=300, deadline=None)
@given(
    max_threads=st.integers(1, 64),
    waits=st.lists(st.floats(0.0, 4.0, allow_nan=False), max_size=60),
    gaps=st.lists(st.floats(0.0, 30.0, allow_nan=False), min_size=60, max_size=60),
)
def test_any_measurements_keep_the_count_in_range_and_change_it_only_as_the_rule_says(max_threads, waits, gaps):
    state, now = ThreadState(max_threads, max_threads), 0.0
    for waited, gap in zip(waits, gaps):
        now += gap
        new, reason = decide(state, waited, now, POLICY)
        assert 1 <= new.threads <= max_threads
        assert (reason is None) == (new.threads == state.threads)
        if new.threads < state.threads:
            assert waited >= POLICY.high and state.high_windows + 1 >= POLICY.drop_after
            assert new.threads == max(state.threads // 2, 1) and new.hold_until > now
        if new.threads > state.threads:
            assert waited <= POLICY.low and state.low_windows + 1 >= POLICY.raise_after
            assert now >= state.hold_until and new.threads == min(2 * state.threads, max_threads)
        state = new


class _Counters:
    """An injected clock and run-queue wait counter: each step adds the step's wall time x waited share."""

    def __init__(self):
        self.now, self.wait_ns = 0.0, 0
        self.reads = 0

    def clock(self):
        return self.now

    def read(self):
        self.reads += 1
        return self.wait_ns


def _step(gov, counters, wall, waited_per_thread):
    gov.before_step()
    counters.now += wall
    counters.wait_ns += int(wall * waited_per_thread * gov.threads * 1e9)
    gov.after_step(wall)


def test_governor_drops_and_restores_through_set_threads():
    counters, applied = _Counters(), []
    gov = ThreadGovernor(2, applied.append, read_wait=counters.read, clock=counters.clock)
    for _ in range(40):  # 40 contended 20 ms steps: at least two windows
        _step(gov, counters, 0.02, BUSY)
    assert applied == [1] and gov.threads == 1
    for _ in range(2000):  # calm long enough for the hold and the calm windows
        _step(gov, counters, 0.02, CALM)
    assert applied == [1, 2] and gov.threads == 2


def test_governor_samples_sparsely_and_stays_put_when_calm_or_fixed():
    counters, applied = _Counters(), []
    gov = ThreadGovernor(4, applied.append, read_wait=counters.read, clock=counters.clock, sample_every_s=0.05)
    start = counters.reads
    for _ in range(1000):  # 1000 calm steps of 5 ms: 5 s
        _step(gov, counters, 0.005, CALM)
    assert applied == [] and gov.threads == 4
    assert counters.reads - start <= 2 * (5 / 0.05) + 2  # two reads per sampled step, one sample per 50 ms
    for adaptive, max_threads in ((False, 4), (True, 1)):
        counters, applied = _Counters(), []
        gov = ThreadGovernor(max_threads, applied.append, read_wait=counters.read, clock=counters.clock,
                             adaptive=adaptive)  # fmt: skip
        for _ in range(200):
            _step(gov, counters, 0.02, BUSY)
        assert applied == [] and gov.threads == max_threads


def test_governor_without_schedstat_is_fixed():
    counters, applied = _Counters(), []
    gov = ThreadGovernor(2, applied.append, read_wait=lambda: None, clock=counters.clock)
    for _ in range(200):
        _step(gov, counters, 0.02, BUSY)
    assert applied == [] and gov.threads == 2


def test_runqueue_wait_sums_the_threads_and_skips_unreadable(tmp_path: Path):
    waits = {"101": 5_000, "102": 70_000, "103": 0}
    for tid, wait in waits.items():
        (tmp_path / tid).mkdir()
        (tmp_path / tid / "schedstat").write_text(f"123456 {wait} 7\n")
    (tmp_path / "104").mkdir()  # a thread without schedstat (exited, or the kernel keeps none)
    (tmp_path / "105").mkdir()
    (tmp_path / "105" / "schedstat").write_text("garbage\n")
    assert runqueue_wait_ns(tmp_path) == sum(waits.values())
    assert runqueue_wait_ns(tmp_path / "missing") is None
    assert runqueue_wait_ns(tmp_path / "104") is None
    assert runqueue_wait_ns() is not None  # this machine's own threads (Linux with schedstat)
