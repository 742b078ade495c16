"""GET /metrics against a real aiosd: Prometheus text that prometheus_client's own parser reads back, with the
calls' tokens in it; served to an operator key or (keyless) a loopback program, refused to other keys."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from kernel.gateway import errors, keys, metrics
from kernel.gateway.agents import AgentPool
from kernel.gateway.guard import RequestGuard
from kernel.gateway.keys import KeyRing
from sdk import connect

BASE = "http://127.0.0.1:8000"


def app_for(address: str, keys_path: str | None) -> FastAPI:
    app = FastAPI()
    app.state.pool = AgentPool(address)
    errors.install(app)
    app.add_middleware(RequestGuard, keyring=KeyRing(keys_path) if keys_path else None)
    app.include_router(metrics.router)
    return app


async def scrape(app: FastAPI, headers: dict | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            return await client.get("/metrics", headers=headers or {})
    finally:
        await metrics.close(app)
        await app.state.pool.close()


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_keyless_loopback_scrape_parses_and_counts_the_calls(aiosd):
    with connect(aiosd.address, name="scraped") as agent:
        done = agent.generate("The sky is", max_tokens=5, full=True)
        response = asyncio.run(scrape(app_for(aiosd.address, None)))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    parsed = families(response.text)
    prompt = [s for s in parsed["aios_prompt_tokens"].samples if s.labels["agent"] == "scraped"]
    assert prompt and prompt[0].name == "aios_prompt_tokens_total"
    assert prompt[0].value == done.usage.prompt_tokens
    completion = [s for s in parsed["aios_completion_tokens"].samples if s.labels["agent"] == "scraped"]
    assert completion[0].value == done.usage.completion_tokens
    assert parsed["aios_ttft_seconds"].type == "histogram"
    buckets = [s for s in parsed["aios_ttft_seconds"].samples if s.name == "aios_ttft_seconds_bucket"]
    assert any(s.labels["le"] == "+Inf" and s.value >= 1 for s in buckets)
    assert parsed["aios_kv_blocks_total"].samples[0].value > 0
    for name in ("aios_queue_length", "aios_snapshot_bytes", "aios_kv_blocks_used", "aios_requests", "aios_info"):
        assert name in parsed
    assert parsed["aios_principal_completion_tokens"].type == "counter"


def test_with_keys_only_an_operator_key_scrapes(aiosd, tmp_path):
    path = str(tmp_path / "keys.json")
    operator = keys.add(path, "ops", grants=["proc.view"])
    user = keys.add(path, "user")
    assert asyncio.run(scrape(app_for(aiosd.address, path))).status_code == 401
    denied = asyncio.run(scrape(app_for(aiosd.address, path), {"authorization": f"Bearer {user}"}))
    assert denied.status_code == 403 and "not_an_operator" in denied.text
    allowed = asyncio.run(scrape(app_for(aiosd.address, path), {"authorization": f"Bearer {operator}"}))
    assert allowed.status_code == 200, allowed.text
    assert "aios_uptime_seconds" in families(allowed.text)


def test_render_has_no_global_state():
    """Two renders of different dicts do not leak into each other (a registry per scrape)."""
    base = {
        "uptime_s": 1.0,
        "model": "m",
        "scheduler": "fifo",
        "gauges": {"agents": 1},
        "agents": [],
        "principals": [],
    }
    one = metrics.render(base | {"agents": [{"name": "x", "agent_id": "a1", "principal": "uid:1", "counters": {}}]})
    two = metrics.render(base)
    assert b'agent="x"' in one and b'agent="x"' not in two
