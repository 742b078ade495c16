"""tcp:// only with CurveZMQ: on real sockets (127.0.0.1, a free port) only clients whose public key is authorized get
a connection; anyone else — an unknown key, or no CURVE at all — gets nothing back while the kernel keeps serving;
an authorized client's messages carry its key name as ZAP User-Id; aiosd never serves plain tcp unless asked to."""

import logging
import os
import socket
import stat

import msgpack
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

import sdk
from ipc.curve import (
    CLIENT_KEY_ENV,
    INSECURE_TCP_ENV,
    KEYS_DIR_ENV,
    SERVER_KEY_ENV,
    CurveKeyError,
    KeyStore,
    ServerSecurity,
    load_secret,
)
from ipc.messages import PROTOCOL_VERSION
from kernel import cli
from kernel.daemon import config
from kernel.daemon import main as aiosd
from tests.kernel.harness import InProcessKernel

EVENT_TIMEOUT_MS = 60_000  # generous: a handshake on loopback takes milliseconds
SILENCE_MS = 1_000  # how long a refused client listens for a reply that must not come
HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


@pytest.fixture
def store(tmp_path):
    return KeyStore(str(tmp_path / "keys"))


@pytest.fixture
def secured_kernel(store, address):
    with InProcessKernel(address, security=ServerSecurity(store)) as running:
        yield running


@pytest.fixture
def client_env(monkeypatch, store):
    """The SDK's environment on the kernel's machine: the server key from the default key directory."""
    monkeypatch.setenv(KEYS_DIR_ENV, store.path)
    for name in (CLIENT_KEY_ENV, SERVER_KEY_ENV, INSECURE_TCP_ENV):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


class RawClient:
    """A DEALER speaking the wire protocol by hand, with a monitor that reports how its handshake ended."""

    def __init__(self, address: str, keys: tuple[bytes, bytes] | None, server_key: bytes | None):
        self._zmq = zmq.Context()
        self.socket = self._zmq.socket(zmq.DEALER)
        self.socket.linger = 0
        if keys is not None:
            self.socket.curve_publickey, self.socket.curve_secretkey = keys
            self.socket.curve_serverkey = server_key
        self._monitor = self.socket.get_monitor_socket(HANDSHAKE_EVENTS)
        self.socket.connect(address)

    def handshake(self) -> zmq.Event:
        assert self._monitor.poll(EVENT_TIMEOUT_MS), "the handshake neither succeeded nor failed"
        return zmq.Event(recv_monitor_message(self._monitor)["event"])

    def hello(self) -> None:
        self.socket.send(
            msgpack.packb(
                {
                    "v": PROTOCOL_VERSION,
                    "id": 1,
                    "type": "hello",
                    "body": {"name": "raw", "pid": os.getpid(), "host": socket.gethostname()},
                }
            )
        )

    def close(self) -> None:
        self.socket.disable_monitor()
        self._monitor.close()
        self.socket.close()
        self._zmq.term()


def _ping_as(address: str, monkeypatch, secret_path: str) -> str:
    monkeypatch.setenv(CLIENT_KEY_ENV, secret_path)
    with sdk.connect(address, name="authorized", timeout=60) as kernel:
        kernel.ping()
        return kernel.agent_id


def test_authorized_client_says_hello_and_pings(secured_kernel, store, client_env):
    _, secret = store.new_client("alice")
    assert _ping_as(secured_kernel.address, client_env, secret)


def test_server_key_given_as_z85_text_as_on_another_host(secured_kernel, store, client_env, tmp_path):
    _, secret = store.new_client("remote")
    client_env.setenv(KEYS_DIR_ENV, str(tmp_path / "no-keys-here"))
    client_env.setenv(SERVER_KEY_ENV, store.server_keys()[0].decode("ascii"))
    assert _ping_as(secured_kernel.address, client_env, secret)


@pytest.mark.parametrize("curve", [True, False], ids=["unknown-key", "no-curve"])
def test_unauthorized_client_gets_nothing_and_the_kernel_keeps_serving(secured_kernel, store, client_env, curve):
    _, secret = store.new_client("alice")
    stranger = RawClient(secured_kernel.address, zmq.curve_keypair() if curve else None, store.server_keys()[0])
    try:
        stranger.hello()
        # a key the authenticator refused, or a mechanism mismatch (seen as either event, depending on who closes first)
        expected = (
            {zmq.EVENT_HANDSHAKE_FAILED_AUTH}
            if curve
            else {zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL}
        )
        assert stranger.handshake() in expected
        assert not stranger.socket.poll(SILENCE_MS), "a refused client got a reply"
        assert _ping_as(secured_kernel.address, client_env, secret)  # the kernel serves others meanwhile
        assert not stranger.socket.poll(0)
    finally:
        stranger.close()


def test_keys_added_and_revoked_count_without_a_restart(secured_kernel, store, client_env):
    _, secret = store.new_client("late")  # after the kernel started
    keys = load_secret(secret)
    assert _ping_as(secured_kernel.address, client_env, secret)
    assert store.revoke("late")
    revoked = RawClient(secured_kernel.address, keys, store.server_keys()[0])
    try:
        revoked.hello()
        assert revoked.handshake() == zmq.EVENT_HANDSHAKE_FAILED_AUTH
        assert not revoked.socket.poll(SILENCE_MS)
    finally:
        revoked.close()


def test_user_id_of_an_authorized_clients_frames_is_its_key_name(store, address):
    store.new_client("alice")
    _, bob_secret = store.new_client("bob")
    security = ServerSecurity(store)
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    try:
        security.secure(router)
        router.bind(address)
        bob = RawClient(address, load_secret(bob_secret), security.public_key)
        try:
            bob.socket.send(b"from bob")
            assert router.poll(EVENT_TIMEOUT_MS)
            _, payload = router.recv_multipart(copy=False)
            assert payload.bytes == b"from bob"
            assert payload.get("User-Id") == "bob"
        finally:
            bob.close()
    finally:
        router.close(linger=0)
        security.close()
        context.term()


def test_without_its_authenticator_the_server_admits_no_one(store, address):
    _, secret = store.new_client("alice")
    security = ServerSecurity(store)
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    try:
        security.secure(router)
        router.bind(address)
        security.close()  # no ZAP handler: libzmq would admit any CURVE client unless told to enforce
        alice = RawClient(address, load_secret(secret), security.public_key)
        try:
            alice.socket.send(b"let me in")
            assert alice.handshake() != zmq.EVENT_HANDSHAKE_SUCCEEDED
            assert not router.poll(SILENCE_MS)
        finally:
            alice.close()
    finally:
        router.close(linger=0)
        context.term()


def test_unreadable_authorized_folder_refuses_clients_and_keeps_the_authenticator_alive(
    secured_kernel, store, client_env
):
    _, secret = store.new_client("alice")
    keys = load_secret(secret)
    os.rename(store.authorized_dir, store.authorized_dir + ".away")
    with open(store.authorized_dir, "w"):  # a file where the folder was: listing it raises NotADirectoryError
        pass
    refused = RawClient(secured_kernel.address, keys, secured_kernel.security.public_key)
    try:
        assert refused.handshake() == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    finally:
        refused.close()
    os.unlink(store.authorized_dir)
    os.rename(store.authorized_dir + ".away", store.authorized_dir)
    assert _ping_as(secured_kernel.address, client_env, secret)


def test_sdk_without_a_client_key_fails_at_once_on_tcp(client_env, address):
    with pytest.raises(CurveKeyError, match=CLIENT_KEY_ENV):
        sdk.connect(address, timeout=600)  # raised before any wait: no kernel listens here at all


def test_sdk_refuses_a_secret_key_others_can_read(store, client_env, address):
    _, secret = store.new_client("leaky")
    os.chmod(secret, 0o644)
    client_env.setenv(CLIENT_KEY_ENV, secret)
    with pytest.raises(CurveKeyError, match="chmod 600"):
        sdk.connect(address)


def test_key_directory_is_private_and_made_on_first_use(store):
    ServerSecurity(store)
    for directory in (store.path, store.authorized_dir, store.clients_dir):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(store.server_secret).st_mode) == 0o600
    first = store.server_keys()
    assert ServerSecurity(store).public_key == first[0]  # the pair clients pin is kept across starts


def test_plain_tcp_is_refused_at_start_without_insecure_tcp(monkeypatch, address):
    monkeypatch.setattr(config.zmq, "has", lambda capability: capability != "curve")
    with pytest.raises(SystemExit) as exit_info:
        config.parse_args(["--address", address])
    assert exit_info.value.code == 2
    assert config.parse_args(["--address", address, "--insecure-tcp"]).insecure_tcp


def test_tcp_is_curve_unless_insecure_tcp_is_asked_for(store, address, caplog, tmp_path):
    secured = aiosd._transport_security(config.parse_args(["--address", address, "--keys-dir", store.path]))
    assert isinstance(secured, ServerSecurity)
    with caplog.at_level(logging.WARNING):
        assert aiosd._transport_security(config.parse_args(["--address", address, "--insecure-tcp"])) is None
    assert "--insecure-tcp" in caplog.text
    assert aiosd._transport_security(config.parse_args(["--address", f"ipc://{tmp_path}/k.sock"])) is None


def test_aiosd_refuses_a_key_directory_others_can_write(store, address, caplog):
    os.makedirs(store.path)
    os.chmod(store.path, 0o777)
    assert aiosd.main(["--address", address, "--keys-dir", store.path]) == 2  # before any model loads
    assert "cannot secure" in caplog.text and "chmod 700" in caplog.text


def test_aios_keys_new_list_revoke_server(store, capsys):
    keys = ["keys", "--keys-dir", store.path]
    assert cli.main([*keys, "new", "alice"]) == 0
    assert f"{CLIENT_KEY_ENV}={store.clients_dir}/alice.key_secret" in capsys.readouterr().out
    assert cli.main([*keys, "new", "../escape"]) == 2
    assert cli.main([*keys, "list"]) == 0
    assert capsys.readouterr().out.split()[0] == "alice"
    assert cli.main([*keys, "server"]) == 0
    assert store.server_keys()[0].decode("ascii") in capsys.readouterr().out
    assert cli.main([*keys, "revoke", "alice"]) == 0
    assert cli.main([*keys, "revoke", "alice"]) == 1
    capsys.readouterr()
    assert cli.main([*keys, "list"]) == 0
    assert capsys.readouterr().out == ""
    assert not os.path.exists(os.path.join(store.clients_dir, "alice.key_secret"))
