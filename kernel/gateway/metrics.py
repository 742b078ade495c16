"""GET /metrics: the kernel's accounting and gauges in Prometheus' text format, for a scraper.

`router` (a FastAPI APIRouter) serves it; the app mounts it (app.include_router(metrics.router)). Each scrape makes
one `kernel.metrics` call (kernel/observe/metrics.py) and renders it through prometheus_client with a collector of its
own (KernelCollector) in a registry made for that scrape: nothing is kept in prometheus_client's global registry.

Who may scrape: what the guard (kernel/gateway/guard.py) admitted, narrowed as for the dashboard (/ui): with a keys
file, an operator key, one whose grants hold proc.view (a key without it: 403 not_an_operator); without one, the
loopback programs the guard lets through. The call itself goes through the gateway's own operator connection, made
with the admin token the kernel leaves in its runtime directory (so the kernel checks proc.view again and its audit
log names the operator); it is opened on the first scrape, kept in app.state, dropped and reopened when the kernel
restarts, and closed by close(app).

Metric names (labels in braces; counters since the kernel started):
    aios_info{model,scheduler} 1, aios_uptime_seconds, aios_agents, aios_queue_length,
    aios_requests{state=running|waiting|preempted}, aios_kv_blocks_used, aios_kv_blocks_total, aios_snapshot_bytes
    (arena in use), aios_snapshot_capacity_bytes, aios_tools_in_flight, aios_approvals_pending,
    aios_generated_tokens_per_second (over the kernel's recent window)
    tool runs started early (read-only calls started as the model writes them, kernel/services/early_start.py):
    aios_early_tool_runs_started_total, aios_early_tool_runs_total{outcome=claimed|expired|dropped|refused} (how the
    held runs left: started = held + the outcomes' sum), aios_early_tool_runs_held (held now, waiting for a claim);
    absent when the kernel runs without early starts
    per connected agent {agent (its name), agent_id, principal}: aios_prompt_tokens_total,
    aios_completion_tokens_total, aios_calls_total, aios_errors_total{+code}, aios_preemptions_total,
    aios_snapshot_written_bytes_total, aios_tool_calls_total{+tool}
    per principal {principal}, ended agents included: aios_principal_prompt_tokens_total,
    aios_principal_completion_tokens_total, aios_principal_calls_total, aios_principal_errors_total{+code},
    aios_principal_preemptions_total, and the histograms aios_ttft_seconds, aios_token_seconds (a call's mean seconds
    per generated token), aios_tool_call_seconds
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from kernel.access.capabilities import Capability
from kernel.gateway.agents import OPEN_AGENT
from kernel.gateway.errors import APIError
from kernel.gateway.guard import KEY_STATE
from kernel.gateway.ui.operator import OperatorLink
from sdk.errors import KernelError

PATH = "/metrics"
AGENT_NAME = "aios metrics"
STATE = "metrics_link"
AGENT_LABELS = ("agent", "agent_id", "principal")
EARLY_OUTCOMES = ("claimed", "expired", "dropped", "refused")  # kernel/services/early_start.py EarlyOutcome values

router = APIRouter()


@router.get(PATH)
async def metrics(request: Request) -> Response:
    _authorize(request)
    try:
        values = await _link(request).metrics()
    except KernelError as error:
        raise APIError(
            503, f"the kernel did not answer kernel.metrics: {error}", "server_error", "unavailable"
        ) from None
    except OSError as error:  # the admin token is unreadable: the gateway does not run as the kernel's user
        raise APIError(
            503, f"the gateway cannot read the kernel's admin token ({error})", "server_error", "unavailable"
        ) from None
    return Response(render(values), media_type=CONTENT_TYPE_LATEST)


async def close(app) -> None:
    """Close the operator connection the scrapes opened (the app's lifespan calls this at shutdown)."""
    link = getattr(app.state, STATE, None)
    if link is not None:
        await link.close()


def render(values: dict) -> bytes:
    """kernel.metrics' dict in Prometheus text format (a registry made for this scrape alone)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(KernelCollector(values))
    return generate_latest(registry)


class KernelCollector:
    """One scrape's metric families, from one kernel.metrics dict."""

    def __init__(self, values: dict):
        self.values = values

    def collect(self):
        values, gauges = self.values, self.values.get("gauges", {})
        info = GaugeMetricFamily("aios_info", "the model and scheduler this kernel runs", labels=["model", "scheduler"])
        info.add_metric([str(values.get("model", "")), str(values.get("scheduler", ""))], 1)
        yield info
        yield GaugeMetricFamily("aios_uptime_seconds", "seconds since the kernel started", value=values["uptime_s"])
        for name, key, text in (
            ("aios_agents", "agents", "connected agents"),
            ("aios_queue_length", "queue_length", "LLM calls waiting or preempted"),
            ("aios_kv_blocks_used", "kv_blocks_used", "KV blocks in use by the engine"),
            ("aios_kv_blocks_total", "kv_blocks_total", "KV blocks the engine has"),
            ("aios_snapshot_bytes", "snapshot_bytes_used", "bytes of the snapshot arena in use"),
            ("aios_snapshot_capacity_bytes", "snapshot_bytes_total", "bytes of the snapshot arena"),
            ("aios_tools_in_flight", "tools_in_flight", "tool calls running"),
            ("aios_approvals_pending", "approvals_pending", "tool calls waiting for the operator"),
            ("aios_generated_tokens_per_second", "tokens_per_s", "tokens generated per second, recently"),
        ):
            yield GaugeMetricFamily(name, text, value=gauges.get(key, 0))
        requests = GaugeMetricFamily("aios_requests", "LLM calls in flight by state", labels=["state"])
        for state in ("running", "waiting", "preempted"):
            requests.add_metric([state], gauges.get(f"requests_{state}", 0))
        yield requests
        yield from _early_families(values.get("early_tools") or {})
        yield from _agent_families(values.get("agents", []))
        yield from _principal_families(values.get("principals", []))


def _early_families(early: dict):
    if not early.get("enabled"):
        return
    yield CounterMetricFamily(
        "aios_early_tool_runs_started", "tool runs started early, before the agent's tool.call", value=early["started"]
    )
    outcomes = CounterMetricFamily(
        "aios_early_tool_runs", "tool runs started early that left the holding table, by outcome", labels=["outcome"]
    )
    for outcome in EARLY_OUTCOMES:
        outcomes.add_metric([outcome], early.get(outcome, 0))
    yield outcomes
    yield GaugeMetricFamily(
        "aios_early_tool_runs_held", "tool runs started early, held for a claim", value=early["held"]
    )


def _agent_families(agents: list[dict]):
    plain = {
        "prompt_tokens": CounterMetricFamily("aios_prompt_tokens", "prompt tokens admitted", labels=AGENT_LABELS),
        "completion_tokens": CounterMetricFamily("aios_completion_tokens", "tokens generated", labels=AGENT_LABELS),
        "calls": CounterMetricFamily("aios_calls", "LLM calls finished", labels=AGENT_LABELS),
        "preemptions": CounterMetricFamily("aios_preemptions", "times its calls were preempted", labels=AGENT_LABELS),
        "snapshot_bytes": CounterMetricFamily(
            "aios_snapshot_written_bytes", "KV bytes written to the arena for it", labels=AGENT_LABELS
        ),
    }
    errors = CounterMetricFamily("aios_errors", "LLM calls ended by an error", labels=(*AGENT_LABELS, "code"))
    tools = CounterMetricFamily("aios_tool_calls", "tool calls finished", labels=(*AGENT_LABELS, "tool"))
    for agent in agents:
        labels = [str(agent["name"]), str(agent["agent_id"]), str(agent["principal"])]
        counters = agent["counters"]
        for key, family in plain.items():
            family.add_metric(labels, counters.get(key, 0))
        for code, n in counters.get("errors", {}).items():
            errors.add_metric([*labels, str(code)], n)
        for tool, n in counters.get("tool_calls", {}).items():
            tools.add_metric([*labels, str(tool)], n)
    yield from plain.values()
    yield errors
    yield tools


def _principal_families(principals: list[dict]):
    label = ["principal"]
    plain = {
        key: CounterMetricFamily(f"aios_principal_{key}", text, labels=label)
        for key, text in (
            ("prompt_tokens", "prompt tokens admitted, ended agents included"),
            ("completion_tokens", "tokens generated, ended agents included"),
            ("calls", "LLM calls finished, ended agents included"),
            ("preemptions", "preemptions, ended agents included"),
        )
    }
    errors = CounterMetricFamily("aios_principal_errors", "LLM calls ended by an error", labels=[*label, "code"])
    histograms = {
        "ttft_seconds": HistogramMetricFamily("aios_ttft_seconds", "time to first token", labels=label),
        "token_seconds": HistogramMetricFamily(
            "aios_token_seconds", "a call's mean seconds per generated token", labels=label
        ),
        "tool_call_seconds": HistogramMetricFamily("aios_tool_call_seconds", "tool call latency", labels=label),
    }
    for row in principals:
        labels = [str(row["principal"])]
        for key, family in plain.items():
            family.add_metric(labels, row["counters"].get(key, 0))
        for code, n in row["counters"].get("errors", {}).items():
            errors.add_metric([*labels, str(code)], n)
        for key, family in histograms.items():
            hist = row["histograms"][key]
            bounds = [_le(b) for b in hist["buckets"]] + ["+Inf"]
            family.add_metric(labels, list(zip(bounds, hist["cumulative"], strict=True)), hist["sum"])
    yield from plain.values()
    yield errors
    yield from histograms.values()


def _le(bound: float) -> str:
    return repr(float(bound))


def _authorize(request: Request) -> None:
    entry = request.scope.get("state", {}).get(KEY_STATE)
    if entry is OPEN_AGENT:  # no keys file: the guard let a loopback program through
        return
    if entry is None or Capability.PROC_VIEW.value not in entry.grants:
        raise APIError(
            403,
            f"/metrics needs an operator key: one granting {Capability.PROC_VIEW.value}",
            "permission_error",
            "not_an_operator",
        )


def _link(request: Request) -> OperatorLink:
    state = request.app.state
    link = getattr(state, STATE, None)
    if link is None:
        link = OperatorLink(request.app.state.pool.address, name=AGENT_NAME)
        setattr(state, STATE, link)
    return link
