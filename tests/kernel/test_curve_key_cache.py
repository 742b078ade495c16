"""The ZAP handler's authorized keys are cached: a flood of handshakes reads the authorized folder once while it is
unchanged, and any change to it (a key added, revoked, the folder replaced) is seen at the next handshake. The cache
always answers what a fresh read of the folder would (property-based over sequences of changes)."""

import os

import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipc.curve import AuthorizedKeys, KeyStore, ServerSecurity, load_secret
from tests.kernel.harness import InProcessKernel
from tests.kernel.test_curve import RawClient

HANDSHAKES = 40
OLD = 1_000_000_000  # seconds since the epoch: a folder last changed long ago (past the racy window)


def _age(path: str) -> None:
    """Make the folder look unchanged for a long time, as it is on a kernel serving for a while."""
    os.utime(path, (OLD, OLD))


def _handshake(address: str, store: KeyStore, secret) -> int:
    keys = load_secret(secret) if isinstance(secret, str) else secret
    client = RawClient(address, keys, store.server_keys()[0])
    try:
        return client.handshake()
    finally:
        client.close()


def test_a_handshake_flood_reads_an_unchanged_folder_once(tmp_path, address):
    store = KeyStore(str(tmp_path / "keys"))
    _, secret = store.new_client("alice")
    _, other = store.new_client("bob")
    security = ServerSecurity(store)
    with InProcessKernel(address, security=security):
        _age(store.authorized_dir)
        results = [_handshake(address, store, secret if i % 2 else other) for i in range(HANDSHAKES)]
        assert results == [zmq.EVENT_HANDSHAKE_SUCCEEDED] * HANDSHAKES
        assert security.key_reads == 1

        other = load_secret(other)  # revoke removes the secret certificate too
        store.revoke("bob")  # the folder changed: the next handshake sees it
        assert _handshake(address, store, other) == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        assert _handshake(address, store, secret) == zmq.EVENT_HANDSHAKE_SUCCEEDED
        _, late = store.new_client("carol")
        assert _handshake(address, store, late) == zmq.EVENT_HANDSHAKE_SUCCEEDED
        _age(store.authorized_dir)
        reads = security.key_reads
        assert [_handshake(address, store, late) for _ in range(10)] == [zmq.EVENT_HANDSHAKE_SUCCEEDED] * 10
        assert security.key_reads <= reads + 1


NAMES = st.sampled_from(["a", "b", "c", "d"])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), NAMES),
        st.tuples(st.just("revoke"), NAMES),
        st.tuples(st.just("age"), st.just("")),
        st.tuples(st.just("lookup"), NAMES),
        st.tuples(st.just("replace"), NAMES),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_the_cache_answers_what_a_fresh_read_would(tmp_path_factory, ops):
    store = KeyStore(str(tmp_path_factory.mktemp("keys")))
    store.server_keys()
    cache = AuthorizedKeys(store)
    publics: dict[str, bytes] = {}  # every key ever made here, authorized now or not
    for op, name in ops:
        if op == "add" and name not in store.authorized():
            store.new_client(name)
            publics[name] = load_secret(os.path.join(store.clients_dir, name + ".key_secret"))[0]
        elif op == "revoke":
            store.revoke(name)
        elif op == "replace" and name in store.authorized():  # a new key under an old name, as an operator may do
            store.revoke(name)
            store.new_client(name)
            publics[name] = load_secret(os.path.join(store.clients_dir, name + ".key_secret"))[0]
        elif op == "age":
            _age(store.authorized_dir)
        truth = store.authorized()
        for key in set(publics.values()):
            assert cache.names(key) == sorted(n for n, k in truth.items() if k == key)
