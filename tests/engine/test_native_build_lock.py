"""The native build's lock: a `lock` file left by a killed build no longer hangs the next load (torch's FileBaton
would wait on it forever), and builds of one extension still take turns."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from kernel.engine.cpu import native


def test_a_killed_builds_lock_file_is_removed_under_the_build_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    folder = tmp_path / "aios_cpu_ops_test"
    folder.mkdir()
    (folder / "lock").write_text("")  # what a build killed mid-way leaves
    with native._build_lock("aios_cpu_ops_test"):
        assert not (folder / "lock").exists()


def test_a_second_build_waits_for_the_first(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    (tmp_path / "aios_cpu_ops_test").mkdir()
    other = textwrap.dedent(
        """
        import fcntl, sys
        with open(sys.argv[1], "a+") as guard:
            try:
                fcntl.flock(guard, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print("held")
            else:
                print("free")
        """
    )
    guard = tmp_path / ".aios_cpu_ops_test.build-lock"
    with native._build_lock("aios_cpu_ops_test"):
        held = subprocess.run([sys.executable, "-c", other, str(guard)], capture_output=True, text=True, timeout=60)
    after = subprocess.run([sys.executable, "-c", other, str(guard)], capture_output=True, text=True, timeout=60)
    assert held.stdout.strip() == "held" and after.stdout.strip() == "free"
