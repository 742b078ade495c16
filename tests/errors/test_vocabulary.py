"""One error vocabulary: the kernel's codes and the client's own never collide, every one of them maps to an HTTP
status in the gateway (500 only for a kernel bug or an engine failure), the SDK raises with the enum members, and a
code a client does not know (a newer kernel) is carried as its string, not a failure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipc.errors import ClientCode, ErrorCode, parse_code
from kernel.gateway.errors import BY_CODE, from_kernel
from sdk import protocol
from sdk.errors import KernelError, KernelTimeout, KernelUnavailable

CODES = [*ErrorCode, *ClientCode]
SERVER_FAILURES = {ErrorCode.INTERNAL, ErrorCode.ENGINE}


def test_the_two_enums_share_no_value():
    assert not {c.value for c in ErrorCode} & {c.value for c in ClientCode}


@given(st.sampled_from(CODES), st.text(max_size=40), st.none() | st.floats(0, 1e6))
def test_every_code_maps_to_a_status_and_only_server_failures_to_500(code, message, delay):
    for raised_as in (code, code.value):  # the member, or the string a reply carries
        error = from_kernel(KernelError(raised_as, message, delay))
        assert 400 <= error.status < 600 and error.message == message
        assert (error.status == 500) is (code in SERVER_FAILURES)
        assert error.body()["error"]["code"] == BY_CODE[code][2]


def test_the_gateway_maps_context_length_as_openai_does_whatever_the_message_says():
    for message in ("", "prompt (9 tokens) + max_tokens (9) exceeds the 10-token context", "engine_error"):
        error = from_kernel(KernelError("context_length_exceeded", message))
        assert (error.status, error.type, error.code) == (400, "invalid_request_error", "context_length_exceeded")
    # an engine failure whose text happens to talk about the context is still an engine failure
    failure = from_kernel(KernelError(ErrorCode.ENGINE, "exceeds the 4096 tokens a sequence may hold"))
    assert (failure.status, failure.code) == (500, "engine_error")


@given(st.text(min_size=1, max_size=30).filter(lambda s: s not in {c.value for c in CODES}))
def test_an_unknown_code_is_kept_as_its_string_and_is_a_500_naming_it(code):
    assert parse_code(code) == code and not isinstance(parse_code(code), (ErrorCode, ClientCode))
    error = from_kernel(KernelError(code, "new"))
    assert (error.status, error.code) == (500, code)


@pytest.mark.parametrize("code", CODES)
def test_parse_code_returns_the_member(code):
    assert parse_code(code.value) is code and parse_code(code) is code
    assert KernelError(code.value, "m").code is code
    assert str(code) == f"{code}" == code.value  # what logs and messages print


def test_the_sdk_s_own_conditions_are_client_codes():
    assert KernelTimeout("late").code is ClientCode.TIMEOUT
    assert KernelUnavailable("none").code is ClientCode.UNAVAILABLE
    assert protocol.disconnected().code is ClientCode.DISCONNECTED
    assert protocol.unauthorized("tcp://127.0.0.1:1").code is ClientCode.UNAUTHORIZED
    assert protocol.over_limit("ipc:///nowhere").code is ErrorCode.BUSY
    with pytest.raises(KernelUnavailable) as raised:
        protocol.check_listening("ipc:///nonexistent/aios-test.sock")
    assert raised.value.code == "unavailable"  # str members still compare with their values
