import pytest

from tests.kernel.harness import InProcessKernel


@pytest.fixture
def kernel(tmp_path):
    with InProcessKernel(f"ipc://{tmp_path}/kernel.sock") as running:
        yield running
