"""For tests that start sandboxed servers from this project's interpreter: skip, saying what to do, when the sandbox
user could not reach it (the project checked out under a directory only its owner can enter, such as `mktemp -d`'s
0700, run as root), instead of failing at the server's start.

    skip_unless_sandbox_reaches()        # in a fixture or test: pytest.skip(the check's message) if unreachable
    @needs_sandbox_reach()               # on a test: the same, decided at collection
"""

from __future__ import annotations

import sys

import pytest

from kernel.tools.sandbox import reach_problem

# What every built-in sandboxed server and the test servers exec: this interpreter and a module of the project.
PROJECT_SERVER = (sys.executable, "-m", "kernel.tools.servers.calculator")


def skip_unless_sandbox_reaches(argv: list[str] | None = None) -> None:
    problem = reach_problem(list(argv or PROJECT_SERVER))
    if problem is not None:
        pytest.skip(str(problem))


def needs_sandbox_reach():
    problem = reach_problem(list(PROJECT_SERVER))
    return pytest.mark.skipif(problem is not None, reason=str(problem))
