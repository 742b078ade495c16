"""Early tool starts through a real aiosd (the default model, constrained tool calls) and a real MCP server whose
tools record each invocation in a file and sleep (tests/tools/servers/recorder.py).

A chat names the tool it must call (tool_choice), so the model always writes a call; what the tests check is what the
kernel does with it: a read-only tool starts before the agent's tool.call (its invocation is in the file while the
agent has not asked yet), exactly once, and the tool.call gets that run's result; other arguments run anew; a tool
without a read-only mark, a restricted tool the agent may not call, and a call that opted out never start early; an
agent that ends with a held result leaves nothing held.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import sdk
from ipc import runtime_dir
from ipc.address import admin_token_path
from kernel.launch import KernelProcess
from tests.kernel.harness import wait_until

SLEEP_S = 1.5
OPTIONS = {"dtype": "float32", "max-batch": "4", "kv-budget": "4096"}


def recorder_tools(workdir: Path) -> tuple[Path, Path]:
    """A tools config serving the recording MCP server, which appends its invocations to record: (record, config)."""
    record = workdir / "invocations.jsonl"
    record.touch()
    config = workdir / "tools.toml"
    config.write_text(
        "[servers.recorder]\n"
        'command = ["python", "-m", "tests.tools.servers.recorder"]\n'
        f"env = {{ RECORD_FILE = {json.dumps(str(record))}, RECORD_SLEEP_S = {json.dumps(str(SLEEP_S))} }}\n"
        "concurrency = 8\n"
    )
    return record, config


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("early")
    record, config = recorder_tools(workdir)
    address = f"ipc://{workdir}/kernel.sock"
    with KernelProcess(address, {**OPTIONS, "tools": str(config)}, workdir / "aiosd.log") as process:
        process.record = record
        process.audit_path = workdir / "audit.jsonl"
        yield process


def runs(kernel, tool: str) -> list[dict]:
    with open(kernel.record) as lines:
        return [r for r in map(json.loads, lines) if r["tool"] == tool]


def connect(kernel, name: str, token: str | None = None):
    return sdk.connect(kernel.address, name=name, token=token, timeout=300)


def admin_token(kernel) -> str:
    return runtime_dir.read_secret(admin_token_path(kernel.address)).decode()


def offered(listing_agent, name: str) -> list[dict]:
    return [t for t in listing_agent.tools.as_openai() if t["function"]["name"] == name]


def model_call(agent, tools: list[dict], **options):
    """The call the model writes when it must call tools[0] (name, parsed arguments)."""
    name = tools[0]["function"]["name"]
    messages = [{"role": "user", "content": f"Use {name} for the key 'alpha'."}]
    choice = {"type": "function", "function": {"name": name}}
    completion = agent.chat(messages, tools=tools, tool_choice=choice, max_tokens=64, full=True, **options)
    assert completion.tool_calls, completion.text
    call = completion.tool_calls[0]
    return call.name, json.loads(call.arguments)


def stat(observer, key: str) -> int:
    return int(observer.stats().get(key, 0))


def audit_reasons(kernel) -> list[str]:
    if not os.path.exists(kernel.audit_path):
        return []
    with open(kernel.audit_path) as lines:
        return [r.get("reason", "") for r in map(json.loads, lines)]


def test_started_once_early_and_claimed(kernel):
    agent = connect(kernel, "early-claim")
    try:
        before = len(runs(kernel, "lookup"))
        claims = stat(agent, "early_tool_claims")
        name, arguments = model_call(agent, offered(agent, "lookup"))
        # The agent has not asked for the tool yet: the kernel started it as the model wrote the call.
        wait_until(lambda: len(runs(kernel, "lookup")) == before + 1, what="the early start's invocation")
        output = agent.tools.call(name, arguments)
        assert not output.is_error, output.text
        invocations = runs(kernel, "lookup")[before:]
        assert len(invocations) == 1  # the tool.call was answered by the early run, not a second one
        assert output.text == invocations[0]["run"]
        assert invocations[0]["key"] == arguments["key"]
        assert stat(agent, "early_tool_claims") == claims + 1
        wait_until(
            lambda: any("claimed the early start" in r for r in audit_reasons(kernel)), what="the claim's audit record"
        )
        assert any("started early" in r for r in audit_reasons(kernel))
    finally:
        agent.close()


def test_other_arguments_run_anew(kernel):
    agent = connect(kernel, "early-mismatch")
    try:
        before = len(runs(kernel, "lookup"))
        name, arguments = model_call(agent, offered(agent, "lookup"))
        other = {"key": "zz" if arguments["key"] != "zz" else "zy"}
        output = agent.tools.call(name, other)
        invocations = runs(kernel, "lookup")[before:]
        mine = [r for r in invocations if r["key"] == other["key"]]
        assert len(mine) == 1 and output.text == mine[0]["run"]  # its own run answered it
        assert len(invocations) == 2  # and the early run of the model's arguments happened too, apart
    finally:
        agent.close()


def test_tool_without_read_only_mark_never_starts_early(kernel):
    agent = connect(kernel, "early-store")
    try:
        starts = stat(agent, "early_tool_starts")
        before = len(runs(kernel, "store"))
        name, arguments = model_call(agent, offered(agent, "store"))
        assert stat(agent, "early_tool_starts") == starts
        assert len(runs(kernel, "store")) == before
        output = agent.tools.call(name, arguments)
        assert output.text == runs(kernel, "store")[before]["run"]
        assert len(runs(kernel, "store")) == before + 1
    finally:
        agent.close()


def test_call_opting_out_never_starts_early(kernel):
    agent = connect(kernel, "early-optout")
    try:
        starts = stat(agent, "early_tool_starts")
        model_call(agent, offered(agent, "lookup"), early_tools=False)
        assert stat(agent, "early_tool_starts") == starts
    finally:
        agent.close()


def test_restricted_tool_starts_early_only_for_an_agent_allowed_to_call_it(kernel):
    admin = connect(kernel, "early-admin", admin_token(kernel))
    granted = connect(kernel, "early-granted", admin.grant(["tool:run_python"]))
    plain = connect(kernel, "early-plain")
    try:
        tools = offered(granted, "run_python")
        assert tools and not offered(plain, "run_python")  # the plain agent does not even see it
        starts = stat(plain, "early_tool_starts")
        model_call(plain, tools)  # offered by hand, with the kernel's own schema
        assert stat(plain, "early_tool_starts") == starts
        model_call(granted, tools)  # the same call, from an agent that may make it
        assert stat(granted, "early_tool_starts") == starts + 1
    finally:
        for agent in (plain, granted, admin):
            agent.close()


def test_agent_ending_with_a_held_result_leaves_nothing_held(kernel):
    observer = connect(kernel, "early-observer")
    agent = connect(kernel, "early-leaver")
    try:
        expired = stat(observer, "early_tool_expired")
        model_call(agent, offered(agent, "lookup"))
        assert stat(observer, "early_tools_held") >= 1
        agent.close()
        wait_until(lambda: stat(observer, "early_tools_held") == 0, what="the held result freed")
        assert stat(observer, "early_tool_expired") >= expired + 1
        assert stat(observer, "early_tool_watches") == 0
        wait_until(
            lambda: any("dropped unclaimed: the agent ended" in r for r in audit_reasons(kernel)),
            what="the expiry's audit record",
        )
    finally:
        agent.close()
        observer.close()


def test_aiosd_with_early_tools_off_runs_each_call_once_when_asked(tmp_path):
    record = tmp_path / "invocations.jsonl"
    record.touch()
    config = tmp_path / "tools.toml"
    config.write_text(
        "[servers.recorder]\n"
        'command = ["python", "-m", "tests.tools.servers.recorder"]\n'
        f'env = {{ RECORD_FILE = {json.dumps(str(record))}, RECORD_SLEEP_S = "0" }}\n'
    )
    address = f"ipc://{tmp_path}/kernel.sock"
    options = {**OPTIONS, "tools": str(config), "early-tools": "off"}
    with KernelProcess(address, options, tmp_path / "aiosd.log") as process:
        process.record = record
        agent = connect(process, "early-off")
        try:
            name, arguments = model_call(agent, offered(agent, "lookup"))
            assert "early_tool_starts" not in agent.stats()  # no early starts at all in this kernel
            output = agent.tools.call(name, arguments)
            assert [r["run"] for r in runs(process, "lookup")] == [output.text]
        finally:
            agent.close()
