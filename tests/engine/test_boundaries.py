"""The engine package's boundaries, each checked in a fresh interpreter (the test process has long imported all of it).

- kernel/engine/structured depends on the engine's errors only: importing any of its modules imports no
  kernel.engine.core module, so core (which builds on structured's constraints) and structured do not import each other.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import kernel.engine.structured

REPO = Path(__file__).resolve().parents[2]
STRUCTURED = sorted(
    f"kernel.engine.structured.{info.name}" for info in pkgutil.iter_modules(kernel.engine.structured.__path__)
)


def _fresh(code: str, env: dict[str, str] | None = None) -> dict:
    """Run code in a new interpreter at the repository root; it prints one JSON value, returned here."""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_structured_modules_are_found():
    # the parametrized test below would pass vacuously on an empty list
    assert "kernel.engine.structured.constraint" in STRUCTURED and len(STRUCTURED) >= 5


@pytest.mark.parametrize("module", STRUCTURED)
def test_structured_imports_no_core(module):
    loaded = _fresh(
        f"import importlib, json, sys; importlib.import_module({module!r}); "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('kernel.engine.core'))))"
    )
    assert loaded == [], f"{module} imports {loaded}"


def test_core_still_sees_the_same_errors():
    # callers catch interface.EngineError: it must be the very class the structured modules raise
    from kernel.engine import errors
    from kernel.engine.core import interface

    for name in ("EngineError", "ContextLengthExceeded", "NoCapacity", "check_context_length"):
        assert getattr(interface, name) is getattr(errors, name)
