"""What the operator's dashboard costs to look at: page load and update latency in a real browser with 50 agents.

    python -m bench.ui_bench [--agents 50] [--generating 4] [--runs 15] [--interval 1.0]

One aiosd (the default model, float32 as the tests run it) and one keyless gateway (`aios gateway`, dashboard
refresh --interval). --agents agents connect (SDK connections held by this process), --generating of them keep a
long generation running so the requests table, queue and plots have work to show. Headless Chromium (selenium;
Debian's chromium and chromium-driver) then measures, --runs times each, medians and 90th percentiles:

    blank page load      navigation to a same-origin static file (/ui/static/style.css): the floor of a
                         navigation through this gateway, the baseline page loads are divided by
    dashboard load       navigation to /ui: responseEnd, DOMContentLoaded and load (the Navigation Timing API)
    first frame          navigation start to the first snapshot drawn, every agent row in the DOM
    update latency       a new agent's hello returned (the kernel's state changed) to its row in the page's DOM
                         (a MutationObserver stamps Date.now(), compared with this process's clock: same host)
    kernel.top           the syscall's round trip from an operator connection at the same moment: what one refresh
                         costs the kernel; the update latency is divided by the refresh interval

Timings are wall-clock on a shared machine: compare the ratios measured side by side in one run, not the absolute
numbers across runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench import browser
from ipc import runtime_dir
from ipc.address import admin_token_path
from kernel.gateway.process import GatewayProcess
from kernel.launch import KernelProcess
from sdk import KernelError, connect

OBSERVE_ROW = """
const [name, done] = [arguments[0], arguments[arguments.length - 1]];
const body = document.querySelector("#agents tbody");
const seen = () => Array.from(body.rows).some((row) => row.cells[1] && row.cells[1].textContent === name);
if (seen()) { done(Date.now()); return; }
const observer = new MutationObserver(() => { if (seen()) { observer.disconnect(); done(Date.now()); } });
observer.observe(body, {childList: true, subtree: true, characterData: true});
"""
NAVIGATION = "const n = performance.getEntriesByType('navigation')[0]; return n ? n.toJSON() : null;"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--generating", type=int, default=4)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--interval", type=float, default=1.0, help="the dashboard's refresh interval, seconds")
    args = parser.parse_args(argv)
    reason = browser.missing()
    if reason is not None:
        print(f"ui_bench: {reason}")
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="ui-bench-"))
    options = {"dtype": "float32", "kv-budget": 16384, "max-batch": 16, "arena-mb": 64}
    env = {"AIOS_UI_INTERVAL_S": str(args.interval)}
    with (
        KernelProcess(f"ipc://{workdir}/kernel.sock", options, workdir / "aiosd.log", ready_timeout_s=900) as kernel,
        GatewayProcess(kernel.address, None, workdir / "gateway.log", env=env) as gateway,
    ):
        base = gateway.url.rsplit("/v1", 1)[0]
        agents = [connect(kernel.address, name=f"bench-agent-{i:03d}", timeout=900) for i in range(args.agents)]
        stop = threading.Event()
        workers = [threading.Thread(target=_generate, args=(kernel.address, i, stop)) for i in range(args.generating)]
        for worker in workers:
            worker.start()
        driver = browser.start(workdir / "profile")
        try:
            _table(_measure(driver, kernel.address, base, args), args)
        finally:
            driver.quit()
            stop.set()  # the writers end with their current call, or when the kernel stops and fails it
            for agent in agents:
                agent.close()
    for worker in workers:
        worker.join(timeout=120)
    return 0


def _generate(address: str, index: int, stop: threading.Event) -> None:
    with connect(address, name=f"bench-writer-{index}", timeout=900) as kernel:
        while not stop.is_set():
            try:
                kernel.generate("Once upon a time", max_tokens=256, ignore_eos=True, temperature=0)
            except KernelError:
                return


def _measure(driver, address: str, base: str, args) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {
        key: [] for key in ("blank", "response", "dom", "load", "first_frame", "update", "top")
    }
    token = runtime_dir.read_secret(admin_token_path(address)).decode()
    driver.set_script_timeout(max(60.0, 30 * args.interval))
    with connect(address, name="ui-bench operator", token=token, timeout=300) as operator:
        for run in range(args.runs):
            driver.get(base + "/ui/static/style.css")
            results["blank"].append(driver.execute_script(NAVIGATION)["loadEventEnd"])
            driver.get(base + "/ui")
            browser.wait_for(
                driver,
                "every agent drawn",
                lambda d: (
                    d.execute_script("return document.body.dataset.firstFrameMs") is not None
                    and len(d.find_elements("css selector", "#agents tbody tr[data-agent-id]")) >= args.agents
                ),
            )
            timing = driver.execute_script(NAVIGATION)
            results["response"].append(timing["responseEnd"])
            results["dom"].append(timing["domContentLoadedEventEnd"])
            results["load"].append(timing["loadEventEnd"])
            results["first_frame"].append(float(driver.execute_script("return document.body.dataset.firstFrameMs")))
            for sample in range(3):  # a few changes per page load
                name = f"bench-new-{run}-{sample}-{os.getpid()}"
                started = time.perf_counter()
                operator.top()
                results["top"].append((time.perf_counter() - started) * 1e3)
                with connect(address, name=name, timeout=300):
                    changed = time.time() * 1e3
                    shown = driver.execute_async_script(OBSERVE_ROW, name)
                results["update"].append(shown - changed)
            print(f"run {run + 1}/{args.runs}: update {results['update'][-1]:.0f} ms", flush=True)
    return results


def _table(results: dict[str, list[float]], args) -> None:
    def p90(values: list[float]) -> float:
        return sorted(values)[max(0, int(round(0.9 * len(values))) - 1)]

    blank = statistics.median(results["blank"])
    interval_ms = args.interval * 1e3
    rows = [
        ("blank page load (baseline)", "blank", blank, "1.00 (baseline)"),
        ("dashboard: response end", "response", blank, None),
        ("dashboard: DOMContentLoaded", "dom", blank, None),
        ("dashboard: load", "load", blank, None),
        ("dashboard: first frame drawn", "first_frame", blank, None),
        ("update latency (hello → row in DOM)", "update", interval_ms, None),
        ("kernel.top round trip", "top", interval_ms, None),
    ]
    print(
        f"\nui_bench: {args.agents} agents ({args.generating} generating), refresh interval {args.interval:g} s, "
        f"{args.runs} page loads, {len(results['update'])} updates"
    )
    print(f"{'measure':<40}{'median ms':>12}{'p90 ms':>10}  ratio")
    for label, key, divisor, fixed in rows:
        median = statistics.median(results[key])
        unit = "of the blank load" if divisor is blank else "of the refresh interval"
        ratio = fixed or f"{median / divisor:.2f} {unit}"
        print(f"{label:<40}{median:>12.1f}{p90(results[key]):>10.1f}  {ratio}")


if __name__ == "__main__":
    raise SystemExit(main())
