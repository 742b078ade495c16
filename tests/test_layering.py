"""Package boundaries, read from the sources' import statements (every file, including imports inside functions):

- ipc/ (the protocol) imports none of the packages built on it;
- sdk/ (what an agent imports) imports only ipc/, never the kernel;
- kernel/ imports neither the example agents nor the bench (the bench and the demo are clients of the kernel);
- kernel/services/ does not import kernel/daemon/ (the daemon is transport and the loop, built on the services);
- kernel/engine/structured/ does not import kernel/engine/core/ (core builds on structured's constraints).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RULES = [  # (folder, module prefixes its files may not import)
    ("ipc", ("kernel", "sdk", "agents", "bench")),
    ("sdk", ("kernel", "agents", "bench")),
    ("kernel", ("agents", "bench")),
    ("kernel/services", ("kernel.daemon",)),
    ("kernel/engine/structured", ("kernel.engine.core",)),
]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _forbidden(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


@pytest.mark.parametrize("folder, prefixes", RULES, ids=[folder for folder, _ in RULES])
def test_no_file_imports_across_its_boundary(folder, prefixes):
    files = sorted((REPO / folder).rglob("*.py"))
    assert files, f"no sources under {folder}"
    crossing = {
        str(path.relative_to(REPO)): sorted(n for n in _imports(path) if _forbidden(n, prefixes)) for path in files
    }
    assert {path: names for path, names in crossing.items() if names} == {}


def test_the_rule_sees_an_import_inside_a_function(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from bench.kernel_proc import KernelProcess\n")
    assert _forbidden("bench.kernel_proc", ("bench",)) and "bench.kernel_proc" in _imports(source)


def test_aios_bench_runs_the_bench_as_a_program():
    done = subprocess.run(
        [sys.executable, "-m", "kernel.cli", "bench", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: python -m bench" in done.stdout and "--smoke" in done.stdout
