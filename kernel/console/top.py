"""`aios top`: the kernel.top snapshot as a live terminal view (rich Live), refreshed every interval.

run(kernel, interval_s, once, console) draws frames until interrupted (Ctrl-C ends it cleanly, 0), or, with once,
prints one frame and returns: what scripts and tests read. A frame is kernel/console/render.py's. The kernel
connection is the caller's (the CLI opens it with the operator's admin token: kernel.top needs proc.view, and a
refusal is the kernel's permission_denied, raised as KernelError). One kernel.top call per interval.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.live import Live

from kernel.console.render import frame

MIN_INTERVAL_S = 0.1


def run(kernel, interval_s: float = 1.0, once: bool = False, console: Console | None = None, rows: int = 20) -> int:
    if not interval_s >= MIN_INTERVAL_S:
        raise ValueError(f"--interval must be at least {MIN_INTERVAL_S} s, got {interval_s}")
    console = console or Console()
    if once:
        console.print(frame(kernel.top(), rows))
        return 0
    with Live(console=console, auto_refresh=False, screen=False, transient=False) as live:
        try:
            while True:
                started = time.monotonic()
                live.update(frame(kernel.top(), rows), refresh=True)
                time.sleep(max(0.0, interval_s - (time.monotonic() - started)))
        except KeyboardInterrupt:
            return 0
