"""The SDK tests use the end-to-end tests' aiosd: a real kernel process per test module (float32)."""

from tests.e2e.conftest import KERNEL_OPTIONS, aiosd  # noqa: F401  (pytest finds the fixture by name here)
