"""One real aiosd (the default model, float32, the storage service on) for the tests/observe modules that need it."""

from __future__ import annotations

import pytest

from ipc import runtime_dir
from ipc.address import admin_token_path
from kernel.launch import KernelProcess

KERNEL_OPTIONS = {"dtype": "float32", "kv-budget": 4096, "max-batch": 16, "arena-mb": 64, "storage": "on"}


@pytest.fixture(scope="package")
def aiosd(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("observe")
    with KernelProcess(f"ipc://{workdir}/kernel.sock", KERNEL_OPTIONS, workdir / "aiosd.log") as kernel:
        yield kernel


def admin_token(address: str) -> str:
    return runtime_dir.read_secret(admin_token_path(address)).decode()
