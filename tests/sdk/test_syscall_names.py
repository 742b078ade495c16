"""Every syscall the SDK sends is a row of the kernel's syscall table (ipc/syscalls.py), with the body type the table
declares: read from the SDK's sources (each Request("<name>", Body(...)) it builds), so a renamed or removed syscall
fails here rather than at an agent's first call."""

from __future__ import annotations

import ast
from pathlib import Path

import ipc.messages
import ipc.service_messages
from ipc.syscalls import BY_NAME

SDK = Path(__file__).resolve().parents[2] / "sdk"


def _requests() -> list[tuple[str, str | None, str]]:
    """(syscall name, body constructor's name or None, where) for every Request(...) with a literal name."""
    found = []
    for path in sorted(SDK.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Request" and node.args:
                name = node.args[0]
                if isinstance(name, ast.Constant) and isinstance(name.value, str):
                    body = node.args[1] if len(node.args) > 1 else None
                    ctor = body.func.id if isinstance(body, ast.Call) and isinstance(body.func, ast.Name) else None
                    found.append((name.value, ctor, f"{path.name}:{node.lineno}"))
    return found


def test_the_sdk_sends_only_syscalls_of_the_table_with_their_body_types():
    requests = _requests()
    assert len({name for name, _, _ in requests}) >= 25  # the SDK's surface, not a handful
    for name, ctor, where in requests:
        assert name in BY_NAME, f"{where}: {name!r} is not a syscall"
        body_type = getattr(ipc.messages, ctor, None) or getattr(ipc.service_messages, ctor, None) if ctor else None
        if body_type is not None:
            assert BY_NAME[name].body is body_type, f"{where}: {name} takes {BY_NAME[name].body.__name__}, not {ctor}"
