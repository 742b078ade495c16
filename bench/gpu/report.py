"""The GPU check's one JSON: check.sh's step records (steps.jsonl: name, ok, seconds, note) and the results the steps
wrote (env.json, parity.json, kernel.json) merged into OUT/check.json, and a short summary printed.

    python -m bench.gpu.report OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PARTS = ("env", "wheels", "parity", "kernel")


def merge(out: Path) -> dict:
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines() if line.strip()]
    report: dict = {
        "ok": bool(steps) and all(s["ok"] for s in steps),
        "steps": steps,
        "seconds": round(sum(s["seconds"] for s in steps), 1),
    }
    for part in PARTS:
        path = out / f"{part}.json"
        if path.is_file():
            report[part] = json.loads(path.read_text())
    (out / "check.json").write_text(json.dumps(report, indent=1))
    return report


def summary(report: dict) -> list[str]:
    lines = [
        f"{'ok  ' if s['ok'] else 'FAIL'} {s['name']:<8} {s['seconds']:>6.1f} s  {s.get('note', '')}"
        for s in report["steps"]
    ]
    parity = report.get("parity", {})
    if "parity" in parity:
        lines.append(
            "parity: tokens agreed "
            + ", ".join(f"{p['agreed']}/{p['of']}" for p in parity["parity"]["prompts"])
            + f" (attention: {parity.get('attention')})"
        )
    for name, rates in parity.get("decode_tok_s", {}).items():
        lines.append(f"decode tok/s {name}: " + ", ".join(f"batch {b}: {r:.1f}" for b, r in rates.items()))
    kernel = report.get("kernel", {})
    if "decode_tok_s" in kernel.get("decode", {}):
        lines.append(
            "decode tok/s aiosd: "
            + ", ".join(f"{b} agents: {r:.1f}" for b, r in kernel["decode"]["decode_tok_s"].items())
        )
    for phase in ("snapshot", "preemption"):
        if phase in kernel:
            lines.append(f"{phase}: {'ok' if kernel[phase]['ok'] else 'FAILED'}")
    lines.append(f"{'PASSED' if report['ok'] else 'FAILED'} in {report['seconds']} s")
    return lines


def main(argv: list[str] | None = None) -> int:
    out = Path((argv or sys.argv[1:])[0])
    report = merge(out)
    print("\n".join(summary(report)))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
