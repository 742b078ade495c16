"""Scheduler names, as given to `aiosd --scheduler NAME`, and their construction with options."""

from __future__ import annotations

from kernel.scheduler.base import Scheduler
from kernel.scheduler.fifo import FifoScheduler
from kernel.scheduler.las import LeastAttainedServiceScheduler
from kernel.scheduler.plas import ProgramLASScheduler
from kernel.scheduler.priority import PriorityScheduler
from kernel.scheduler.rr import RoundRobinScheduler
from kernel.scheduler.sjf import ShortestJobScheduler

SCHEDULERS = {
    cls.name: cls
    for cls in (
        FifoScheduler,
        RoundRobinScheduler,
        PriorityScheduler,
        ShortestJobScheduler,
        LeastAttainedServiceScheduler,
        ProgramLASScheduler,
    )
}


def make_scheduler(name: str, **options) -> Scheduler:
    """Build a policy by name. ValueError for an unknown name, an unknown option or a bad option value."""
    cls = SCHEDULERS.get(name)
    if cls is None:
        raise ValueError(f"unknown scheduler {name!r}; choose one of: {', '.join(sorted(SCHEDULERS))}")
    try:
        return cls(**options)
    except TypeError as exc:
        raise ValueError(f"bad options for scheduler {name!r}: {exc}") from None
