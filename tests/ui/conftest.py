"""One real aiosd (default model; the calculator tool server marked irreversible, so its calls wait for the
operator) and two real gateways in front of it for the tests/ui package: one without keys (loopback, the operator is
any local program) and one with a keys file holding an operator key (proc.view + tool.approve), a viewer key
(proc.view only) and a plain key. Both refresh the dashboard every 0.25 s.

A browser test that fails leaves a screenshot of the page in its tmp_path and prints the path (browser.py)."""

from dataclasses import dataclass
from pathlib import Path

import pytest

from kernel.gateway import keys
from kernel.gateway.process import GatewayProcess
from kernel.launch import KernelProcess

UI_INTERVAL_S = "0.25"
TOOLS_CONFIG = """
[servers.calculator]
command = ["python", "-m", "kernel.tools.servers.calculator"]
irreversible = ["calculate"]
"""


@dataclass
class Stack:
    kernel: KernelProcess
    keyless: GatewayProcess
    keyed: GatewayProcess
    keys_path: str
    keys: dict  # role → plain key
    audit_path: Path

    @staticmethod
    def base(gateway: GatewayProcess) -> str:
        return gateway.url.rsplit("/v1", 1)[0]


@pytest.fixture(scope="package")
def stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ui")
    tools = workdir / "tools.toml"
    tools.write_text(TOOLS_CONFIG)
    keys_path = str(workdir / "keys.json")
    plain = {
        "operator": keys.add(keys_path, "ops", grants=["proc.view", "tool.approve"]),
        "viewer": keys.add(keys_path, "viewer", grants=["proc.view"]),
        "plain": keys.add(keys_path, "plain"),
    }
    audit = workdir / "audit.jsonl"
    options = {
        "dtype": "float32",
        "kv-budget": 4096,
        "max-batch": 16,
        "arena-mb": 64,
        "tools": str(tools),
        "approval-timeout": 900,
        "audit-log": str(audit),
    }
    env = {"AIOS_UI_INTERVAL_S": UI_INTERVAL_S}
    with KernelProcess(f"ipc://{workdir}/kernel.sock", options, workdir / "aiosd.log", ready_timeout_s=900) as kernel:
        with (
            GatewayProcess(kernel.address, None, workdir / "keyless.log", env=env) as keyless,
            GatewayProcess(kernel.address, keys_path, workdir / "keyed.log", env=env) as keyed,
        ):
            yield Stack(kernel, keyless, keyed, keys_path, plain, audit)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (rep_setup, rep_call), for the browser fixture's screenshot on failure."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
