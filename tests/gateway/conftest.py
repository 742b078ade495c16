"""One real aiosd and one real gateway process (uvicorn on a free 127.0.0.1 port) for the tests/gateway package (its
modules share them: starting a kernel costs more than all their calls), with a keys file of a few agents. The
kernel's per-agent queued-token limit is low so a long prompt is a deterministic 429."""

from dataclasses import dataclass

import pytest

from kernel.gateway import keys
from kernel.gateway.process import GatewayProcess
from kernel.launch import KernelProcess

KERNEL_OPTIONS = {
    "dtype": "float32",
    "kv-budget": 4096,
    "max-batch": 16,
    "arena-mb": 64,
    "max-queued-tokens-per-agent": 1000,
}


@dataclass
class Stack:
    kernel: KernelProcess
    gateway: GatewayProcess
    keys_path: str
    keys: dict  # agent name → plain key


@pytest.fixture(scope="package")
def stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gateway")
    keys_path = str(workdir / "keys.json")
    plain = {
        "alice": keys.add(keys_path, "alice", priority=0, max_priority=5),
        "bob": keys.add(keys_path, "bob", priority=2),
        "flood": keys.add(keys_path, "flood"),
    }
    with KernelProcess(f"ipc://{workdir}/kernel.sock", KERNEL_OPTIONS, workdir / "aiosd.log") as kernel:
        with GatewayProcess(kernel.address, keys_path, workdir / "gateway.log") as gateway:
            yield Stack(kernel, gateway, keys_path, plain)
