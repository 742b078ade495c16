"""Crash safety for real: a child process adds memories as fast as it can and prints each id once add() returned;
the parent SIGKILLs it after some number of acknowledged adds (the kill lands anywhere inside a later add: embedding,
the SQLite transaction, its commit). A fresh MemoryManager on the same directory must then hold every printed id
with its exact text, metadata and vector, show nothing torn (every record whole, usage counters equal to the
records), and accept new adds. Repeated over several kill points, with the child's batch size varying."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from kernel.memory import MemoryManager
from kernel.memory.embedder import HashEmbedder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHILD = textwrap.dedent("""
    import sys
    from kernel.memory import MemoryManager
    from kernel.memory.embedder import HashEmbedder
    memory = MemoryManager(sys.argv[1], HashEmbedder(), max_entries=1_000_000, max_bytes=1 << 30, ram_entries=500)
    n = 0
    while True:
        size = 1 + n % 3
        texts = [f"fact {n + j} " + "x" * ((n + j) % 50) for j in range(size)]
        ids = memory.add("uid:0/crash", texts, [{"n": n + j} for j in range(size)])
        if n % 5 == 0:
            memory.search("uid:0/crash", texts[0], k=3)        # residency and index work in the mix
        for j, record_id in enumerate(ids):
            print(record_id, n + j, flush=True)
        n += size
""")


@pytest.mark.parametrize("kill_after", [1, 9, 40, 150])
def test_every_acknowledged_add_survives_sigkill(tmp_path, kill_after):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    acknowledged = {}
    try:
        for line in child.stdout:
            record_id, n = line.split()
            acknowledged[record_id] = int(n)
            if len(acknowledged) >= kill_after:
                child.send_signal(signal.SIGKILL)
                break
    finally:
        child.kill()
        child.wait()
        rest = child.stdout.read()  # ids printed between our last read and the kill were acknowledged too
        for line in rest.splitlines():
            parts = line.split()
            if len(parts) == 2:
                acknowledged[parts[0]] = int(parts[1])
    assert child.returncode == -signal.SIGKILL and len(acknowledged) >= kill_after

    memory = MemoryManager(tmp_path, HashEmbedder(), max_entries=1_000_000, max_bytes=1 << 30, ram_entries=500)
    try:
        for record_id, n in acknowledged.items():
            record = memory.get("uid:0/crash", record_id)
            assert record.text == f"fact {n} " + "x" * (n % 50) and record.metadata == {"n": n}
        records = memory.list("uid:0/crash", 0, 100_000)
        for record in records:  # anything beyond the acknowledged (a commit whose print was cut) is whole
            n = record.metadata["n"]
            assert record.text == f"fact {n} " + "x" * (n % 50)
        stats = memory.stats()
        assert stats["entries"] == len(records) >= len(acknowledged)
        assert stats["bytes"] == sum(len(r.text) + len(f'{{"n":{r.metadata["n"]}}}') for r in records)
        for record_id, n in list(acknowledged.items())[-5:]:  # the vectors made it too
            hit = memory.search("uid:0/crash", f"fact {n} " + "x" * (n % 50), k=1)[0]
            assert hit.id == record_id and hit.score > 0.999
        memory.add("uid:0/crash", ["after the crash"], [{}])
    finally:
        memory.close()
