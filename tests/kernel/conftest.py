import socket

import pytest

from tests.kernel.harness import InProcessKernel


@pytest.fixture
def kernel(tmp_path):
    with InProcessKernel(f"ipc://{tmp_path}/kernel.sock") as running:
        yield running


@pytest.fixture
def address():
    """A tcp:// address on a loopback port that was free a moment ago (the Curve tests bind it)."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return f"tcp://127.0.0.1:{port}"
