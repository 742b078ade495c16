"""One `aios top` frame: a kernel.top snapshot (schema: kernel/observe/top.py) drawn as rich tables.

frame(top) returns a rich renderable: a header line (model, scheduler, uptime, rates, KV and arena use), then the
approvals waiting, agents, requests, the scheduler's queue, tools in flight with the runs started early and held
for their tool.call (STATE "early running" / "early finished"), and the busiest spaces, each table
capped at `rows` lines with "… N more" under it, so a frame fits a terminal whatever the kernel holds. Every value
the kernel sends is shown as text (rich markup in agent names is escaped, never interpreted). Missing fields show
"–": a kernel older or newer than this schema still draws.
"""

from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

DASH = "–"
STATE_STYLES = {"running": "bold green", "waiting": "yellow", "preempted": "yellow", "tool": "cyan", "idle": "dim"}


def frame(top: dict, rows: int = 20) -> RenderableType:
    parts: list[RenderableType] = [header(top)]
    approvals = top.get("approvals") or []
    if approvals:
        parts.append(_approvals(approvals, rows))
    parts += [_agents(top, rows), _requests(top, rows), _queue(top), _tools(top, rows)]
    spaces = top.get("spaces") or {}
    if spaces.get("memory") or spaces.get("files"):
        parts.append(_spaces(spaces, rows))
    return Group(*parts)


def header(top: dict) -> Text:
    rates, kv, arena = top.get("rates") or {}, top.get("kv") or {}, top.get("arena") or {}
    line = Text()
    line.append("aios top", style="bold")
    line.append(
        f"  {top.get('model', DASH)}  scheduler {top.get('scheduler', DASH)}  up {seconds(top.get('uptime_s'))}"
    )
    line.append(f"  steps {number(top.get('steps'))}\n")
    line.append(f"{sample(rates.get('tokens_per_s'))} tok/s", style="bold")
    line.append(f"  TTFT p50 {seconds(rates.get('ttft_p50_s'))}  queue {number(rates.get('queue_length'))}")
    line.append(
        f"  KV {number(kv.get('blocks_used'))}/{number(kv.get('blocks_total'))} blocks"
        f"  batch {number(kv.get('running'))}/{number(kv.get('max_batch'))}"
        f"  arena {size(arena.get('bytes_used'))}/{size(arena.get('bytes_total'))}"
        f"  agents {number(top.get('agents_total'))}  calls {number(top.get('requests_total'))}"
    )
    return line


def _table(title: str) -> Table:
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, expand=False)


def _more(table: Table, shown: int, total: int | None) -> Table:
    if total is not None and total > shown:
        table.caption = f"… {total - shown} more"
        table.caption_justify = "left"
    return table


def _agents(top: dict, rows: int) -> Table:
    agents = top.get("agents") or []
    table = _table("Agents")
    for name, justify in (
        ("AGENT", "left"),
        ("NAME", "left"),
        ("PRINCIPAL", "left"),
        ("PID", "right"),
        ("PRIO", "right"),
        ("STATE", "left"),
        ("CALLS", "right"),
        ("PROMPT", "right"),
        ("COMPL", "right"),
        ("DONE", "right"),
        ("ERR", "right"),
        ("QUOTA LEFT", "left"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)
    for agent in agents[:rows]:
        state = str(agent.get("state", DASH))
        table.add_row(
            text(agent.get("agent_id")),
            text(agent.get("name")),
            text(agent.get("principal")),
            text(agent.get("pid")),
            text(agent.get("priority")),
            Text(state, style=STATE_STYLES.get(state, "")),
            number(agent.get("requests")),
            number(agent.get("prompt_tokens")),
            number(agent.get("completion_tokens")),
            number(agent.get("calls")),
            number(agent.get("errors")),
            quota(agent.get("quota")),
        )
    return _more(table, min(rows, len(agents)), top.get("agents_total", len(agents)))


def _requests(top: dict, rows: int) -> Table:
    requests = top.get("requests") or []
    table = _table("Requests")
    for name in ("REQUEST", "AGENT", "STATE", "PRIO", "PROMPT", "GEN", "MAX", "WAITED", "AGE"):
        table.add_column(name, justify="left" if name in ("REQUEST", "AGENT", "STATE") else "right", no_wrap=True)
    for request in requests[:rows]:
        state = str(request.get("state", DASH))
        table.add_row(
            text(request.get("request_id")),
            text(request.get("agent_id")),
            Text(state, style=STATE_STYLES.get(state, "")),
            text(request.get("priority")),
            number(request.get("prompt_tokens")),
            number(request.get("generated_tokens")),
            number(request.get("max_tokens")),
            seconds(request.get("waiting_s")),
            seconds(request.get("age_s")),
        )
    return _more(table, min(rows, len(requests)), top.get("requests_total", len(requests)))


def _queue(top: dict) -> Text:
    queue = top.get("queue") or []
    line = Text("Queue", style="italic")
    line.append(f" ({top.get('queue_order', 'arrival')} order, {len(queue)}): ")
    line.append(" ".join(str(r) for r in queue[:40]) or DASH)
    if len(queue) > 40:
        line.append(f" … {len(queue) - 40} more")
    return line


def _approvals(approvals: list, rows: int) -> Table:
    table = _table("Approvals waiting (aios approve ID / aios deny ID)")
    for name in ("ID", "AGENT", "TOOL", "WAITING", "ARGUMENTS"):
        table.add_column(name, no_wrap=name != "ARGUMENTS", justify="right" if name == "WAITING" else "left")
    for held in approvals[:rows]:
        table.add_row(
            text(held.get("approval_id")),
            text(f"{held.get('agent_name', DASH)} ({held.get('agent_id', DASH)})"),
            text(held.get("tool")),
            seconds(held.get("waiting_s")),
            text(held.get("arguments")),
        )
    return _more(table, min(rows, len(approvals)), len(approvals))


def _tools(top: dict, rows: int) -> Table:
    tools, early = top.get("tools") or [], top.get("early") or []
    table = _table("Tools in flight, and runs started early held for their tool.call")
    for name in ("AGENT", "TOOL", "STATE", "AGE"):
        table.add_column(name, justify="right" if name == "AGE" else "left", no_wrap=True)
    for call in tools[:rows]:
        table.add_row(
            text(call.get("agent_id")), text(call.get("tool")), text("in flight"), seconds(call.get("running_s"))
        )
    for run in early[: max(0, rows - len(tools))]:
        state = Text(f"early {run.get('state', DASH)}", style="cyan")
        table.add_row(text(run.get("agent_id")), text(run.get("tool")), state, seconds(run.get("age_s")))
    shown = min(rows, len(tools) + len(early))
    return _more(table, shown, len(tools) + top.get("early_total", len(early)))


def _spaces(spaces: dict, rows: int) -> Table:
    table = _table("Spaces")
    for name in ("KIND", "SPACE", "ITEMS", "BYTES"):
        table.add_column(name, justify="right" if name in ("ITEMS", "BYTES") else "left", no_wrap=True)
    listed = [("memory", s, s.get("entries")) for s in spaces.get("memory") or []]
    listed += [("files", s, s.get("files")) for s in spaces.get("files") or []]
    for kind, space, items in listed[:rows]:
        table.add_row(kind, text(space.get("space")), number(items), size(space.get("bytes")))
    return _more(table, min(rows, len(listed)), len(listed))


def text(value) -> Text:
    """A kernel value as plain text: never read as rich markup."""
    return Text(DASH if value is None else str(value))


def number(value) -> str:
    return DASH if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def sample(value) -> str:
    return DASH if value is None else f"{value:.1f}"


def seconds(value) -> str:
    if value is None:
        return DASH
    if value >= 3600:
        return f"{value / 3600:.1f}h"
    if value >= 60:
        return f"{value / 60:.1f}m"
    return f"{value:.1f}s"


def size(value) -> str:
    if value is None:
        return DASH
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return DASH


def quota(value: dict | None) -> str:
    if not value:
        return DASH
    parts = []
    if value.get("minute_left") is not None:
        parts.append(f"{value['minute_left']:,}/min")
    if value.get("total_left") is not None:
        parts.append(f"{value['total_left']:,} total")
    return escape(" ".join(parts)) if parts else "unlimited"
