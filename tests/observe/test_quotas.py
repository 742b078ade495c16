"""Token quotas with an injected clock: the bucket's arithmetic, the retry-after it names, reservations refunded and
never below zero, the total quota, and limits that an agent may lower but never raise."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipc.errors import ErrorCode
from kernel.observe.quotas import Quota, QuotaPolicy, QuotaRefused


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_refuses_with_the_seconds_until_it_holds_the_call():
    clock = Clock()
    quota = Quota(600, None, clock)  # 10 tokens per second
    quota.admit(500)
    with pytest.raises(QuotaRefused) as refused:
        quota.admit(200)  # the bucket holds 100
    assert refused.value.code is ErrorCode.BUSY
    assert refused.value.retry_after_s == pytest.approx(10.0)
    clock.now += refused.value.retry_after_s
    quota.admit(200)  # and then it does


def test_unused_reservation_is_refunded():
    clock = Clock()
    quota = Quota(600, None, clock)
    quota.admit(600)
    quota.settle(600, 100)  # used 100 of the 600 it held
    assert quota.left()["minute_left"] == 500
    quota.admit(500)


def test_a_call_larger_than_the_bucket_waits_for_a_full_bucket_then_goes_into_debt():
    clock = Clock()
    quota = Quota(60, None, clock)  # 1 token per second
    quota.admit(1000)  # full bucket: admitted
    quota.settle(1000, 1000)
    with pytest.raises(QuotaRefused) as refused:
        quota.admit(10)
    assert refused.value.retry_after_s == pytest.approx(940 + 10)  # pay back the debt, then hold 10


def test_total_quota_is_quota_exceeded_without_retry_after():
    quota = Quota(None, 1000, Clock())
    quota.admit(600)
    with pytest.raises(QuotaRefused) as refused:
        quota.admit(500)  # 600 still reserved
    assert refused.value.code is ErrorCode.QUOTA and refused.value.retry_after_s is None
    quota.settle(600, 100)
    quota.admit(500)  # the refund made room
    assert quota.left()["total_left"] == 400


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 10_000),
    st.one_of(st.none(), st.integers(1, 100_000)),
    st.lists(st.tuples(st.integers(1, 5000), st.floats(0, 1), st.floats(0, 30)), max_size=40),
)
def test_levels_never_leave_their_bounds(per_minute, total, calls):
    clock = Clock()
    quota = Quota(per_minute, total, clock)
    held = []
    for reserve, used_share, wait in calls:
        clock.now += wait
        try:
            quota.admit(reserve)
            held.append((reserve, int(reserve * used_share)))
        except QuotaRefused as refused:
            assert refused.retry_after_s is None or refused.retry_after_s > 0
        if held and used_share > 0.5:
            reserved, used = held.pop(0)
            quota.settle(reserved, used)
        left = quota.left()
        assert 0 <= left["minute_left"] <= per_minute
        assert quota.reserved >= 0 and quota.used >= 0
        if total is not None:
            assert quota.used + quota.reserved <= total
            assert left["total_left"] >= 0


def test_settling_more_than_reserved_charges_only_the_reservation():
    quota = Quota(None, 100, Clock())
    quota.admit(50)
    quota.settle(50, 10_000)
    assert quota.used == 50 and quota.reserved == 0


@pytest.mark.parametrize(
    "default, asked, expected",
    [((0, 0), (None, None), (None, None)), ((0, 0), (100, 5), (100, 5)), ((1000, 50), (100, 500), (100, 50))],
)
def test_an_agent_may_lower_its_limits_never_raise_them(default, asked, expected):
    quota = QuotaPolicy(*default).for_agent(*asked, clock=Clock())
    assert (quota.tokens_per_minute, quota.tokens_total) == expected
