import pytest

from kernel.launch import KernelProcess

# float32 so that a sequence's greedy output does not depend on what it was batched with
KERNEL_OPTIONS = {"dtype": "float32", "kv-budget": 4096, "max-batch": 16, "arena-mb": 64}


@pytest.fixture(scope="module")
def aiosd(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("aiosd")
    with KernelProcess(f"ipc://{workdir}/kernel.sock", KERNEL_OPTIONS, workdir / "aiosd.log") as kernel:
        yield kernel
