"""The kernel loop's syscall budget: while the engine has work, one iteration handles syscalls only until the budget
is spent and leaves the rest for the next, so a flood of calls cannot hold every agent's decode step; an idle engine
takes everything queued. Driven on the loop's own method with a real Inbox (no timing: a zero budget)."""

from types import SimpleNamespace

from kernel.daemon import loop as loop_module
from kernel.daemon.inbound import Inbox
from kernel.daemon.loop import KernelLoop


def _loop(inbox: Inbox, handled: list) -> SimpleNamespace:
    return SimpleNamespace(_inbox=inbox, _idle_wait_s=0.01, _handle=handled.append)


def test_a_busy_engine_takes_syscalls_until_its_budget_is_spent(monkeypatch):
    monkeypatch.setattr(loop_module, "SYSCALL_BUDGET_S", 0.0)
    inbox, handled = Inbox(), []
    for item in range(5):
        inbox.put(item)
    loop = _loop(inbox, handled)
    assert KernelLoop._take_syscalls(loop, block=False) is True
    assert handled == [0]  # one, then the engine steps
    assert KernelLoop._take_syscalls(loop, block=False) is True
    assert handled == [0, 1]
    assert KernelLoop._take_syscalls(loop, block=True) is True  # an idle engine: all that is queued
    assert handled == [0, 1, 2, 3, 4]


def test_stop_is_seen_behind_a_budgeted_backlog(monkeypatch):
    monkeypatch.setattr(loop_module, "SYSCALL_BUDGET_S", 0.0)
    inbox, handled = Inbox(), []
    for item in range(3):
        inbox.put(item)
    inbox.put_stop()
    loop = _loop(inbox, handled)
    results = [KernelLoop._take_syscalls(loop, block=False) for _ in range(4)]
    assert handled == [0, 1, 2] and results == [True, True, True, False]
