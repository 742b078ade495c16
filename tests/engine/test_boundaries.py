"""The engine package's boundaries, each checked in a fresh interpreter (the test process has long imported all of it).

- kernel/engine/structured depends on the engine's errors only: importing any of its modules imports no
  kernel.engine.core module, so core (which builds on structured's constraints) and structured do not import each other.
- Importing the engine or the scheduler changes no environment variable: the process environment an engine wants is
  set by the entry points that run one (kernel/engine/process_env.py), never as a side effect of an import.
- One name per engine kind: EngineKind's values are the engine folders; a command line's name (or an older alias) is
  parsed once into one, and anything else is refused with the accepted names.
"""

from __future__ import annotations

import argparse
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


@pytest.mark.parametrize("module", ["kernel.engine", "kernel.engine.factory", "kernel.scheduler"])
def test_import_leaves_environment_unchanged(module):
    # a clean environment: none of the variables an engine entry point would set are there to begin with
    env = {
        k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "THP_MEM_ALLOC_ENABLE")
    }
    changed = _fresh(
        f"import importlib, json, os; before = dict(os.environ); importlib.import_module({module!r}); "
        "after = dict(os.environ); "
        "print(json.dumps(sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))))",
        env=env,
    )
    assert changed == [], f"importing {module} changed {changed}"


def test_entry_point_settings_respect_the_user():
    from kernel.engine.process_env import ENGINE_OPENMP_SETTINGS, configure_process_env, without_engine_openmp

    env: dict[str, str] = {}
    chosen = configure_process_env(env)
    assert set(chosen) == set(env) and "GOMP_SPINCOUNT" in env and env["THP_MEM_ALLOC_ENABLE"] == "1"
    assert configure_process_env(env) == []  # idempotent: the second call finds them set
    assert not set(without_engine_openmp(env)) & set(ENGINE_OPENMP_SETTINGS)

    # a wait policy or spin count the user chose stands: no spin count added, none overwritten
    for user in ({"OMP_WAIT_POLICY": "PASSIVE"}, {"GOMP_SPINCOUNT": "7", "THP_MEM_ALLOC_ENABLE": "0"}):
        env = dict(user)
        configure_process_env(env)
        assert {k: env[k] for k in user} == user
        assert "GOMP_SPINCOUNT" not in env or env["GOMP_SPINCOUNT"] == user.get("GOMP_SPINCOUNT")


def test_each_engine_kind_names_its_folder():
    from kernel.engine.kinds import EngineKind

    engine_dir = REPO / "kernel" / "engine"
    for kind in EngineKind:
        assert (engine_dir / kind.value / "__init__.py").is_file(), kind
        assert str(kind) == kind.value  # prints and encodes as the folder's name


def test_kind_names_and_older_aliases_parse_to_the_same_kinds():
    from kernel.engine.kinds import EngineKind, parse_engine_kind

    older = {"torch": EngineKind.CPU, "exllamav2": EngineKind.GPU, "openai": EngineKind.REMOTE}
    for name, kind in older.items():
        assert parse_engine_kind(name) is kind and parse_engine_kind(f" {name.upper()} ") is kind
    for kind in EngineKind:
        assert parse_engine_kind(kind.value) is kind and parse_engine_kind(kind) is kind


@given(st.one_of(st.text(max_size=12), st.integers(), st.none(), st.binary(max_size=8)))
@settings(max_examples=300, deadline=None)
def test_any_other_name_is_refused_clearly(text):
    from kernel.engine.errors import EngineError
    from kernel.engine.kinds import ALIASES, EngineKind, parse_engine_kind

    names = {kind.value for kind in EngineKind} | set(ALIASES)
    if isinstance(text, str) and text.strip().lower() in names:
        assert isinstance(parse_engine_kind(text), EngineKind)
        return
    with pytest.raises(EngineError) as refused:
        parse_engine_kind(text)
    if isinstance(text, str):
        assert all(name in str(refused.value) for name in names)  # the message lists what would be accepted


def test_command_line_refusal_names_the_kinds(capsys):
    from kernel.engine.kinds import ENGINE_KIND_HELP, EngineKind, parse_engine_kind

    parser = argparse.ArgumentParser(prog="aiosd")
    parser.add_argument("--engine", type=parse_engine_kind, default=EngineKind.CPU, help=ENGINE_KIND_HELP)
    assert parser.parse_args(["--engine", "openai"]).engine is EngineKind.REMOTE
    with pytest.raises(SystemExit):
        parser.parse_args(["--engine", "tpu"])
    error = capsys.readouterr().err
    assert "unknown engine kind 'tpu'" in error and "cpu, gpu, remote" in error
