"""What tool servers to run and with which limits: `load_config(path | None) -> ToolsConfig`.

A file is TOML (`.toml`) or JSON (anything else); `None` gives the built-in servers (calculator, python, files,
memory). Unknown keys and wrong types raise ValueError naming the key, so a typo never silently drops a limit.

    [defaults]                 # every key optional; applies to servers that do not set it
    timeout = 30               # seconds per call, queueing included
    concurrency = 4            # calls running at once per tool
    queue = 8                  # calls waiting per tool beyond that; more → busy
    max_output_bytes = 65536   # result text cut here (truncated=True)
    startup_timeout = 20       # seconds for spawn + MCP initialize + tools/list

    [servers.calculator]
    command = ["python", "-m", "kernel.tools.servers.calculator"]   # "python" → this interpreter
    env = {}                   # exact values given to the server (e.g. AIOS_ADDRESS / AIOS_TOKEN the kernel mints)
    pass_env = []              # names copied from the kernel's own environment (nothing is inherited otherwise)
    timeout = 10
    tool_timeouts = {}         # per-tool override, seconds
    irreversible = []          # tool names that need a human's approval
    early_start = []           # read-only / idempotent tools the kernel may start as the model writes the call
                               # (also: an MCP readOnlyHint or idempotentHint annotation; never an irreversible one)
    context = []               # context keys the kernel may inject into this server's tools ("space", "agent_id")
    sandbox = true
    [servers.calculator.limits]   # sandbox limits (kernel/tools/sandbox.py), any subset
    cpu_seconds = 600
    memory_mb = 2048
    open_files = 256
    processes = 128
    file_size_mb = 64
    network = false

    [sandbox]                  # what no sandboxed server may see (kernel/tools/sandbox.py covers each with an
    hide = ["/srv/secrets"]    # empty read-only tmpfs); added to the kernel's runtime and data directories

What sandboxed servers never see: `ToolsConfig.hidden_paths()` = `hide`, then the paths in $AIOS_SANDBOX_HIDE
(os.pathsep-separated), then the defaults derived as aiosd derives them: the directory of the admin token of
`default_address()` (the socket's directory for ipc://), `ipc.runtime_dir.default_path()` and
`kernel.services.factory.default_data_dir()`. A kernel started with another address or data directory must put them
in `hide` (or the environment) before building the ToolManager.

The environment a server gets: PATH, LANG, LC_ALL, HOME (its private directory when sandboxed), PYTHONPATH (the
project root, so built-in `-m kernel.tools.servers.X` resolve), then `pass_env` names, then `env` values. Nothing else
of the kernel's environment (AIOS_TOKEN, keys, credentials) reaches a server unless named here.
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from kernel.tools.sandbox import SandboxLimits
from kernel.tools.specs import DEFAULT_MAX_OUTPUT_BYTES

# The keys a server's config may carry; anything else in a file is a mistake worth refusing.
_SERVER_KEYS = {
    "command",
    "env",
    "pass_env",
    "timeout",
    "tool_timeouts",
    "concurrency",
    "queue",
    "max_output_bytes",
    "startup_timeout",
    "irreversible",
    "early_start",
    "context",
    "sandbox",
    "limits",
}
_DEFAULT_KEYS = {"timeout", "concurrency", "queue", "max_output_bytes", "startup_timeout"}


@dataclass
class ServerConfig:
    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    pass_env: list[str] = field(default_factory=list)
    timeout: float = 30.0
    tool_timeouts: dict[str, float] = field(default_factory=dict)
    concurrency: int = 4
    queue: int = 8
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    startup_timeout: float = 20.0
    irreversible: list[str] = field(default_factory=list)
    early_start: list[str] = field(default_factory=list)
    context: list[str] = field(default_factory=list)
    sandbox: bool = False
    limits: SandboxLimits = field(default_factory=SandboxLimits)

    def timeout_for(self, tool: str) -> float:
        return self.tool_timeouts.get(tool, self.timeout)

    def argv(self) -> list[str]:
        """The command with a leading "python" meaning this interpreter (the venv the kernel runs in)."""
        if self.command and self.command[0] in ("python", "python3"):
            return [sys.executable, *self.command[1:]]
        return list(self.command)


HIDE_ENV = "AIOS_SANDBOX_HIDE"


@dataclass
class ToolsConfig:
    servers: list[ServerConfig] = field(default_factory=list)
    hide: list[str] = field(default_factory=list)  # paths no sandboxed server sees, beyond the defaults

    def hidden_paths(self) -> tuple[str, ...]:
        """Absolute, without duplicates, in order: `hide`, $AIOS_SANDBOX_HIDE, the kernel's default directories."""
        listed = [*self.hide, *os.environ.get(HIDE_ENV, "").split(os.pathsep), *default_hidden_paths()]
        return tuple(dict.fromkeys(os.path.abspath(path) for path in listed if path))

    def server(self, name: str) -> ServerConfig:
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(name)


def default_hidden_paths() -> list[str]:
    """The runtime directory (socket, admin token, audit log) and data directory that aiosd uses by default."""
    from ipc import runtime_dir
    from ipc.address import admin_token_path, default_address
    from kernel.services.factory import default_data_dir  # here: the factory imports this package

    return [os.path.dirname(admin_token_path(default_address())), runtime_dir.default_path(), default_data_dir()]


def default_config() -> ToolsConfig:
    """The built-in servers. files and memory act on the calling agent's space through the SDK: the kernel must put
    AIOS_ADDRESS and AIOS_TOKEN (a grant with fs.any / mem.any) into their `env` before start(); they run unsandboxed
    (they need the kernel's socket and are project code, not agent code)."""

    def builtin(name: str, **options) -> ServerConfig:
        return ServerConfig(name=name, command=["python", "-m", f"kernel.tools.servers.{name}"], **options)

    return ToolsConfig(
        servers=[
            builtin("calculator", timeout=10.0, sandbox=True, early_start=["calculate"]),
            # The runner bounds each snippet itself (its own timeout and limits); the call timeout leaves it room.
            builtin("python", timeout=60.0, concurrency=2, queue=4, sandbox=True),
            builtin("files", context=["space"], irreversible=["write_file", "delete_file"]),
            builtin("memory", context=["space"]),
        ]
    )


def load_config(path: str | Path | None) -> ToolsConfig:
    if path is None:
        return default_config()
    path = Path(path)
    text = path.read_text()
    raw = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    return parse_config(raw)


def parse_config(raw: dict) -> ToolsConfig:
    _expect(raw, dict, "config")
    unknown = set(raw) - {"defaults", "servers", "sandbox"}
    if unknown:
        raise ValueError(f"unknown top-level keys: {sorted(unknown)}")
    defaults = raw.get("defaults", {})
    _expect(defaults, dict, "defaults")
    if set(defaults) - _DEFAULT_KEYS:
        raise ValueError(f"unknown keys in defaults: {sorted(set(defaults) - _DEFAULT_KEYS)}")
    servers = raw.get("servers", {})
    _expect(servers, dict, "servers")
    sandbox = raw.get("sandbox", {})
    _expect(sandbox, dict, "sandbox")
    if set(sandbox) - {"hide"}:
        raise ValueError(f"unknown keys in sandbox: {sorted(set(sandbox) - {'hide'})}")
    hide = _expect(sandbox.get("hide", []), list, "sandbox.hide")
    if not all(isinstance(path, str) and os.path.isabs(path) for path in hide):
        raise ValueError("sandbox.hide must be a list of absolute paths")
    return ToolsConfig(
        servers=[_parse_server(name, {**defaults, **body}) for name, body in servers.items()], hide=list(hide)
    )


def _parse_server(name: str, body: dict) -> ServerConfig:
    where = f"servers.{name}"
    _expect(body, dict, where)
    unknown = set(body) - _SERVER_KEYS
    if unknown:
        raise ValueError(f"unknown keys in {where}: {sorted(unknown)}")
    command = body.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(part, str) for part in command):
        raise ValueError(f"{where}.command must be a non-empty list of strings")
    options: dict = {"name": name, "command": command}
    for key, kind in (
        ("timeout", (int, float)),
        ("startup_timeout", (int, float)),
        ("concurrency", int),
        ("queue", int),
        ("max_output_bytes", int),
        ("sandbox", bool),
    ):
        if key in body:
            value = _expect(body[key], kind, f"{where}.{key}")
            if kind is not bool and value <= 0 and not (key == "queue" and value == 0):
                raise ValueError(f"{where}.{key} must be positive")
            options[key] = value
    for key in ("env", "tool_timeouts"):
        if key in body:
            options[key] = dict(_expect(body[key], dict, f"{where}.{key}"))
    for key in ("pass_env", "irreversible", "early_start", "context"):
        if key in body:
            value = _expect(body[key], list, f"{where}.{key}")
            if not all(isinstance(item, str) for item in value):
                raise ValueError(f"{where}.{key} must be a list of strings")
            options[key] = list(value)
    if "limits" in body:
        limits = _expect(body["limits"], dict, f"{where}.limits")
        known = {f.name for f in fields(SandboxLimits)}
        if set(limits) - known:
            raise ValueError(f"unknown keys in {where}.limits: {sorted(set(limits) - known)}")
        options["limits"] = replace(SandboxLimits(), **limits)
    return ServerConfig(**options)


def _expect(value, kind, where: str):
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool) and bool not in _tuple(kind)):
        raise ValueError(f"{where} has the wrong type ({type(value).__name__})")
    return value


def _tuple(kind) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)
