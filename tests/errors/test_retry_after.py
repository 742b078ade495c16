"""The gateway's Retry-After header: from the kernel's retry_after_s when the error carries one (rounded up to whole
seconds), else today's 1 s for a 429 or 503, and none otherwise."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.gateway.errors import from_kernel
from sdk.errors import KernelError


@given(st.floats(min_value=0, max_value=1e7, allow_nan=False), st.sampled_from(["busy", "quota_exceeded", "shutdown"]))
def test_a_kernel_retry_after_becomes_the_header_rounded_up(delay, code):
    response = from_kernel(KernelError(code, "later", delay)).response()
    seconds = int(response.headers["retry-after"])
    assert seconds - 1 < delay <= seconds and seconds == math.ceil(delay)


@pytest.mark.parametrize("code", ["busy", "quota_exceeded", "shutdown", "unavailable", "disconnected"])
def test_without_one_a_429_or_503_still_says_one_second(code):
    response = from_kernel(KernelError(code, "later")).response()
    assert response.status_code in (429, 503) and response.headers["retry-after"] == "1"


@pytest.mark.parametrize("code", ["bad_request", "permission_denied", "not_found", "internal"])
def test_other_statuses_carry_no_retry_after_unless_the_kernel_gave_one(code):
    assert "retry-after" not in from_kernel(KernelError(code, "no")).response().headers
    assert from_kernel(KernelError(code, "no", 2.5)).response().headers["retry-after"] == "3"
