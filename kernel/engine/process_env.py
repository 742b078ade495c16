"""The process environment an in-process engine wants, set by the entry points that run one, never on import.

configure_process_env(env=os.environ) sets, in env, what the torch CPU engine's runtimes read once when torch loads
them or first allocates: so an entry point calls it before anything imports torch (aiosd's main(), the bench scripts
that load an engine in their own process, the test suite's root conftest). It returns the names it set. It never
overrides a value the user chose, and is idempotent. Called after torch is already imported it still sets them (child
processes inherit them) but logs a warning: this process's runtimes have read their settings already.

ENGINE_OPENMP_SETTINGS names the OpenMP variables that are ours to choose: a foreign OpenMP program started from an
entry point (llama.cpp's server in bench/llama_server.py) is given an environment without them, as a user would run it.

Importing this module changes nothing; it imports neither torch nor the rest of the engine.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping

SPIN_COUNT = "100000"
ENGINE_OPENMP_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

log = logging.getLogger(__name__)


def configure_process_env(env: MutableMapping[str, str] | None = None) -> list[str]:
    """Set the engine's process settings in env (default os.environ) where the user has not; the names set."""
    env = os.environ if env is None else env
    chosen: list[str] = []
    # How long an idle OpenMP thread spins before it sleeps, unless the user chose (OMP_WAIT_POLICY or GOMP_SPINCOUNT).
    # A decode step is ~300 ops, each its own parallel region a few microseconds after the last: threads that sleep at
    # once pay a futex wake-up per region (2x slower batch-1 decode, measured), threads that spin forever collapse (10x
    # slower steps) when agent processes share the cores with the engine. A bounded spin covers the gaps between one
    # step's ops and yields the cores between steps.
    if "OMP_WAIT_POLICY" not in env and "GOMP_SPINCOUNT" not in env:
        env["GOMP_SPINCOUNT"] = SPIN_COUNT
        chosen.append("GOMP_SPINCOUNT")
    # Large tensors (the weights, the KV cache) on transparent huge pages: a decode step streams every weight once,
    # and with 4 KiB pages its TLB misses cost about a tenth of a batch-1 step.
    if "THP_MEM_ALLOC_ENABLE" not in env:
        env["THP_MEM_ALLOC_ENABLE"] = "1"
        chosen.append("THP_MEM_ALLOC_ENABLE")
    if chosen and env is os.environ and "torch" in sys.modules:
        log.warning("%s set after torch was imported: this process's runtimes may not see them", ", ".join(chosen))
    return chosen


def without_engine_openmp(env: MutableMapping[str, str]) -> dict[str, str]:
    """A copy of env without our OpenMP settings, for a foreign OpenMP program to run with its own defaults."""
    return {name: value for name, value in env.items() if name not in ENGINE_OPENMP_SETTINGS}
