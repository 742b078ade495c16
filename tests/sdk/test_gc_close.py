"""A connection dropped without close() must not hang its process: the next garbage collection (and the exit) used to
block in Context.__del__ -> term() with the socket monitor still open. Each case runs in a fresh interpreter with a
timeout, against a real kernel (the in-process harness, real ipc sockets) in that same interpreter."""

import subprocess
import sys
import textwrap

import pytest

CHILD_TIMEOUT_S = 120  # generous on a busy 2-core machine; a hang is what fails, never the time it takes

PRELUDE = """
import asyncio, gc, sys, tempfile
sys.path.insert(0, {root!r})
from sdk import aconnect, connect
from tests.kernel.harness import InProcessKernel
kernel = InProcessKernel(f"ipc://{{tempfile.mkdtemp()}}/k.sock").__enter__()
"""

CASES = {
    "sync": """
def f():
    k = connect(kernel.address)
    k.ping()
for _ in range(3):
    f()
    gc.collect()
print("collected", flush=True)
""",
    "sync-never-collected": """
k = connect(kernel.address)
k.ping()
print("collected", flush=True)     # the process exits with k still referenced: interpreter teardown must not hang
""",
    "async": """
async def f():
    k = await aconnect(kernel.address)
    await k.ping()
for _ in range(3):
    asyncio.run(f())
    gc.collect()
print("collected", flush=True)
""",
    "closed-then-dropped": """
def f():
    k = connect(kernel.address)
    k.ping()
    k.close()
    k.close()          # twice is harmless
f()
gc.collect()
print("collected", flush=True)
""",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_dropped_connection_does_not_hang_gc_or_exit(case):
    import os

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = textwrap.dedent(PRELUDE.format(root=root)) + textwrap.dedent(CASES[case]) + "kernel.__exit__()\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "collected" in done.stdout
