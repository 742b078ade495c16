"""The CPU engine's default thread count: physical cores among the allowed CPUs (SMT siblings once), $AIOS_THREADS
over it, and a readable fallback without the sysfs topology. Topologies are written as real sysfs-shaped files."""

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.engine.core.interface import EngineError
from kernel.engine.factory import THREADS_ENV, _parse_cpu_list, default_threads, physical_cores


def _cpu_list(cpus: list[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def _write_topology(root: Path, cores: list[list[int]]) -> None:
    for siblings in cores:
        for cpu in siblings:
            folder = root / f"cpu{cpu}" / "topology"
            folder.mkdir(parents=True)
            (folder / "thread_siblings_list").write_text(_cpu_list(siblings) + "\n")


@settings(max_examples=60, deadline=None)
@given(n_cores=st.integers(1, 12), smt=st.sampled_from([1, 2, 4]), data=st.data())
def test_counts_each_core_with_an_allowed_cpu_once(n_cores, smt, data):
    # linux numbers siblings either interleaved (0,4 / 1,5) or adjacent (0,1 / 2,3): both
    interleaved = data.draw(st.booleans())
    cores = [[core + i * n_cores if interleaved else core * smt + i for i in range(smt)] for core in range(n_cores)]
    every = [cpu for siblings in cores for cpu in siblings]
    allowed = set(data.draw(st.lists(st.sampled_from(every), min_size=1, unique=True)))
    with tempfile.TemporaryDirectory() as tmp:
        _write_topology(Path(tmp), cores)
        count, reason = physical_cores(allowed, Path(tmp))
    assert count == sum(1 for siblings in cores if allowed & set(siblings))
    assert str(len(allowed)) in reason


def test_without_topology_every_allowed_cpu_counts(tmp_path):
    count, reason = physical_cores({0, 1, 2}, tmp_path)
    assert count == 3 and "no SMT topology" in reason


def test_this_machine_and_the_env_override(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert 1 <= default_threads() <= len(__import__("os").sched_getaffinity(0))
    monkeypatch.setenv(THREADS_ENV, "3")
    assert default_threads() == 3
    for bad in ("0", "-1", "two", ""):
        monkeypatch.setenv(THREADS_ENV, bad)
        with pytest.raises(EngineError):
            default_threads()


@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 5)), min_size=1, max_size=8))
def test_cpu_list_parse(ranges):
    expected = set()
    parts = []
    for low, width in ranges:
        expected.update(range(low, low + width + 1))
        parts.append(f"{low}-{low + width}" if width else str(low))
    assert _parse_cpu_list(",".join(parts) + "\n") == expected
