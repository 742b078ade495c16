"""Config files (TOML and JSON), the visible-schema/injection rules, and the transport's cut of an oversize reply."""

from __future__ import annotations

import json

import pytest

from ipc.errors import ErrorCode, ProtocolError
from kernel.tools import load_config
from kernel.tools.schema import CONTEXT_MARK, compile_schema
from kernel.tools.transport import TRUNCATED_META, _partial_json_string, _truncated

TOML = """
[defaults]
timeout = 5
concurrency = 2

[servers.calc]
command = ["python", "-m", "kernel.tools.servers.calculator"]
sandbox = true
tool_timeouts = { calculate = 1.5 }
irreversible = ["calculate"]
[servers.calc.limits]
memory_mb = 512
network = false
"""


def test_toml_and_json_give_the_same_config(tmp_path):
    (tmp_path / "tools.toml").write_text(TOML)
    import tomllib

    (tmp_path / "tools.json").write_text(json.dumps(tomllib.loads(TOML)))
    for name in ("tools.toml", "tools.json"):
        server = load_config(tmp_path / name).server("calc")
        assert server.timeout == 5 and server.concurrency == 2 and server.sandbox
        assert server.timeout_for("calculate") == 1.5 and server.timeout_for("other") == 5
        assert server.limits.memory_mb == 512 and server.limits.processes == 128
        assert server.irreversible == ["calculate"]


@pytest.mark.parametrize(
    "bad",
    [
        {"servers": {"x": {"command": "python"}}},
        {"servers": {"x": {"command": ["python"], "timout": 3}}},
        {"servers": {"x": {"command": ["python"], "timeout": -1}}},
        {"servers": {"x": {"command": ["python"], "limits": {"ram": 1}}}},
        {"servers": {"x": {"command": ["python"], "sandbox": "yes"}}},
        {"server": {}},
    ],
)
def test_config_mistakes_are_refused(tmp_path, bad):
    (tmp_path / "tools.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError):
        load_config(tmp_path / "tools.json")


def test_default_config_is_the_builtin_servers():
    config = load_config(None)
    assert [server.name for server in config.servers] == ["calculator", "python", "files", "memory"]
    assert config.server("python").sandbox and config.server("calculator").sandbox
    assert config.server("files").context == ["space"] and "delete_file" in config.server("files").irreversible
    assert all(not server.env and not server.pass_env for server in config.servers)  # no secret by default


def test_injected_arguments_are_hidden_and_refused_from_agents():
    schema = compile_schema(
        {
            "type": "object",
            "required": ["q", "space"],
            "properties": {"q": {"type": "string"}, "space": {"type": "string", CONTEXT_MARK: "space"}},
        }
    )
    assert schema.visible["required"] == ["q"] and set(schema.visible["properties"]) == {"q"}
    schema.check("t", {"q": "x"})
    for bad in ({"q": "x", "space": "other"}, {"q": 1}, {}):
        with pytest.raises(ProtocolError) as caught:
            schema.check("t", bad)
        assert caught.value.code == ErrorCode.BAD_REQUEST
    assert schema.inject("t", {"q": "x"}, {"space": "uid:0/a"}, ["space"]) == {"q": "x", "space": "uid:0/a"}
    with pytest.raises(ProtocolError):
        schema.inject("t", {"q": "x"}, {"space": "uid:0/a"}, [])


def test_invalid_server_schema_refuses_calls():
    schema = compile_schema({"type": "object", "properties": {"q": {"type": "no-such-type"}}})
    with pytest.raises(ProtocolError) as caught:
        schema.check("t", {"q": 1})
    assert caught.value.code == ErrorCode.INTERNAL


def test_oversize_reply_is_cut_into_a_valid_result():
    text = 'é"\\ab' * 1000
    line = json.dumps({"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": text}]}}).encode()
    for cut in range(60, 200):  # every cut position, escapes and multibyte characters split
        message = _truncated("t", line[:cut]).message
        assert message.id == 7 and message.result["_meta"][TRUNCATED_META]
        assert text.startswith(message.result["content"][0]["text"])
    assert _partial_json_string(b'abc"rest') == ("abc", True)
    assert _truncated("t", b"garbage without an id" * 10) is None
