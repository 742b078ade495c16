"""A quota an agent asked for outlives its connection, against a real aiosd: an SDK agent that reconnects under the
same name continues its total (kernel.top shows it kept), while other names and an agent that asked for nothing start
fresh; and a gateway key's total survives the gateway's restart: past it the key gets HTTP 429 quota_exceeded."""

from __future__ import annotations

import httpx
import pytest

from kernel.gateway import keys
from kernel.gateway.process import GatewayProcess
from sdk import connect
from sdk.errors import KernelError
from tests.kernel.harness import wait_until
from tests.observe.conftest import admin_token

PROMPT = "Hello"


def row_of(op, name: str) -> dict | None:
    return next((a for a in op.top()["agents"] if a["name"] == name), None)


def test_an_sdk_agent_reconnecting_under_its_name_continues_its_total(aiosd):
    total = 200
    with connect(aiosd.address, token=admin_token(aiosd.address)) as op:
        with connect(aiosd.address, name="kept-sdk", max_tokens_total=total) as agent:
            done = agent.generate(PROMPT, max_tokens=10, ignore_eos=True, full=True)
        used = done.usage.prompt_tokens + done.usage.completion_tokens
        wait_until(lambda: row_of(op, "kept-sdk") is None, what="the first connection's end")
        with connect(aiosd.address, name="kept-sdk", max_tokens_total=total) as again:
            quota = row_of(op, "kept-sdk")["quota"]
            assert quota["kept"] and quota["used"] == used and quota["total_left"] == total - used
            with pytest.raises(KernelError) as refused:  # a fresh quota of `total` would take this call
                again.generate(PROMPT, max_tokens=total - used - done.usage.prompt_tokens + 1)
            assert refused.value.code == "quota_exceeded"
        with (
            connect(aiosd.address, name="kept-sdk-other", max_tokens_total=total) as other,
            connect(aiosd.address, name="kept-sdk") as unasked,
        ):
            assert row_of(op, "kept-sdk-other")["quota"]["total_left"] == total
            quota = next(a for a in op.top()["agents"] if a["agent_id"] == unasked.agent_id)["quota"]
            assert not quota["kept"] and quota["used"] == 0 and quota["tokens_total"] is None
            assert other.agent_id != unasked.agent_id


def chat(url: str, key: str, model: str, max_tokens: int) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens}
    return httpx.post(f"{url}/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=600)


def test_a_gateway_keys_total_survives_the_gateways_restart(aiosd, tmp_path):
    total, agent = 300, "kept-gateway-key"
    keys_path = str(tmp_path / "keys.json")
    key = keys.add(keys_path, agent, max_tokens_total=total)
    with connect(aiosd.address, token=admin_token(aiosd.address)) as op:
        model = op.top()["model"]
        with GatewayProcess(aiosd.address, keys_path, tmp_path / "gateway-1.log") as gateway:
            first = chat(gateway.url, key, model, 8)
            assert first.status_code == 200, first.text
        usage = first.json()["usage"]
        used = usage["prompt_tokens"] + usage["completion_tokens"]
        wait_until(lambda: row_of(op, agent) is None, what="the key's agent ended with its gateway")
        with GatewayProcess(aiosd.address, keys_path, tmp_path / "gateway-2.log") as gateway:
            over = total - used - usage["prompt_tokens"] + 1  # one token past what is left; within a fresh total
            assert 0 < over and usage["prompt_tokens"] + over <= total
            refused = chat(gateway.url, key, model, over)
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "quota_exceeded"
            quota = row_of(op, agent)["quota"]
            assert quota["kept"] and quota["used"] == used and quota["total_left"] == total - used
