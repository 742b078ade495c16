"""The quota book with an injected clock: an asked-for quota continues its principal-and-name holder's spend, never
another principal's; a quota the agent did not ask for starts fresh; each connection keeps its own limits over the
shared spend; the book stays within its bounds under any sequence of hellos, forgetting the oldest holder first."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipc.errors import ErrorCode
from kernel.observe.quota_book import QuotaBook
from kernel.observe.quotas import QuotaPolicy, QuotaRefused


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_asked_quota_continues_across_connections_of_the_same_principal_and_name():
    book, clock, policy = QuotaBook(), Clock(), QuotaPolicy()
    first = book.quota(policy, "uid:1", "metered", None, 1000, clock)
    first.admit(700)
    first.settle(700, 600)  # the connection used 600 and then dropped
    again = book.quota(policy, "uid:1", "metered", None, 1000, clock)
    assert again.left()["total_left"] == 400 and again.left()["kept"]
    with pytest.raises(QuotaRefused) as refused:
        again.admit(401)
    assert refused.value.code is ErrorCode.QUOTA
    again.admit(400)


def test_other_principals_and_names_and_unasked_quotas_start_fresh():
    book, clock = QuotaBook(), Clock()
    policy = QuotaPolicy(tokens_total=5000)
    spent = book.quota(policy, "uid:1", "metered", None, 1000, clock)
    spent.admit(1000)
    spent.settle(1000, 1000)
    for principal, name, asked in (("uid:2", "metered", 1000), ("uid:1", "other", 1000), ("uid:1", "metered", None)):
        fresh = book.quota(policy, principal, name, None, asked, clock)
        assert fresh.left()["total_left"] == fresh.tokens_total and fresh.used == 0
    assert not book.quota(policy, "uid:1", "metered", None, None, clock).left()["kept"]  # the default: per connection


def test_concurrent_connections_share_the_spend_under_their_own_limits():
    book, clock, policy = QuotaBook(), Clock(), QuotaPolicy()
    small = book.quota(policy, "uid:1", "shared", None, 500, clock)
    large = book.quota(policy, "uid:1", "shared", None, 2000, clock)
    large.admit(600)
    assert small.left()["total_left"] == 0 and large.left()["total_left"] == 1400
    with pytest.raises(QuotaRefused):
        small.admit(1)
    large.settle(600, 100)
    small.admit(400)  # the refund reached the shared spend


def test_a_bucket_carried_over_to_a_smaller_one_is_cut_to_its_capacity():
    book, clock, policy = QuotaBook(), Clock(), QuotaPolicy()
    book.quota(policy, "uid:1", "b", 6000, None, clock)  # a full bucket of 6000
    smaller = book.quota(policy, "uid:1", "b", 600, None, clock)
    assert smaller.left()["minute_left"] == 600
    smaller.admit(600)
    with pytest.raises(QuotaRefused) as refused:
        smaller.admit(60)
    assert refused.value.code is ErrorCode.BUSY and refused.value.retry_after_s == pytest.approx(6.0)


hellos = st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 12), st.one_of(st.none(), st.integers(1, 10_000))),
    max_size=120,
)


@settings(max_examples=200, deadline=None)
@given(hellos, st.integers(1, 8), st.integers(1, 5))
def test_the_book_stays_bounded_and_forgets_the_oldest_first(sequence, max_holders, max_per_principal):
    book, clock, policy = QuotaBook(max_holders, max_per_principal), Clock(), QuotaPolicy()
    order: list[tuple[str, str]] = []  # a model of the book: holders by their last hello, oldest first
    for principal_n, name_n, asked in sequence:
        principal, name = f"uid:{principal_n}", f"agent-{name_n}"
        before = book.spend_of(principal, name)
        quota = book.quota(policy, principal, name, None, asked, clock)
        if asked is None:
            assert not quota.spend.kept and book.spend_of(principal, name) is before
            continue
        if before is not None:
            assert quota.spend is before
            order.remove((principal, name))
        else:
            mine = [held for held in order if held[0] == principal]
            if len(mine) >= max_per_principal:
                order.remove(mine[0])
            elif len(order) >= max_holders:
                order.pop(0)
        order.append((principal, name))
        assert len(book) == len(order) <= max_holders
        assert all(book.spend_of(*held) is not None and book.spend_of(*held).kept for held in order)
        assert sum(1 for held in order if held[0] == principal) <= max_per_principal
    for principal_n in range(6):
        for name_n in range(13):
            held = (f"uid:{principal_n}", f"agent-{name_n}")
            assert (book.spend_of(*held) is not None) == (held in order)


def test_bounds_must_be_positive():
    with pytest.raises(ValueError):
        QuotaBook(max_holders=0)
    with pytest.raises(ValueError):
        QuotaBook(max_per_principal=0)
