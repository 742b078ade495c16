"""CurveZMQ for tcp://: the kernel's key pair, the clients it authorizes, and how each side secures its socket.

ipc:// needs none of this (its socket file sits in an owner-only directory). On tcp:// the kernel's ROUTER is a CURVE
server, and a ZAP authenticator lets a client finish the handshake only if its public key is in the authorized folder:
an unauthorized client never gets a connection, so nothing it sends reaches the kernel and nothing comes back. Every
message of an authorized client carries the ZAP User-Id = its key's name (`frame.get("User-Id")` on a frame received
with copy=False); the kernel makes that the principal "key:<name>". Keys added to or removed from the folder count
from the next handshake, without a restart; a revoked client's connection already made stays up until it ends.
The authenticator keeps the folder's keys in memory (AuthorizedKeys) and reads them again only when the folder itself
changed (its inode, mtime or ctime), so a flood of handshakes costs no disk scan each; adding and revoking
(`aios keys`, or any create / rename / unlink in the folder) change it. A key file rewritten in place, which changes
no directory entry, counts once the folder next changes.

Key directory: --keys-dir, else $AIOS_KEYS_DIR, else $XDG_CONFIG_HOME/aios/keys, else ~/.config/aios/keys. It is
under the config directory, not the runtime directory, so that the kernel's public key, which clients pin, survives a
reboot. Directories are 0700 and secret certificates 0600; a key directory or authorized folder another user owns or
can write, or a secret certificate others can read, is refused.
    server.key, server.key_secret     the kernel's certificate pair, made on the first tcp:// start
    authorized/NAME.key               one public certificate per client; the file name is the client's name
    clients/NAME.key_secret           client certificate pairs made by `aios keys new NAME`

Client side (the SDK): AIOS_CLIENT_KEY = the path of the client's secret certificate; AIOS_SERVER_KEY = the kernel's
public key, as its 40-character z85 text or a certificate file (default: server.key in the key directory, for a
kernel on the same machine). AIOS_INSECURE_TCP=1 connects without CURVE, to a kernel started with --insecure-tcp.
Certificates are zmq.auth's files (zmq.auth.create_certificates / load_certificate).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Mapping

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

KEYS_DIR_ENV = "AIOS_KEYS_DIR"
CLIENT_KEY_ENV = "AIOS_CLIENT_KEY"
SERVER_KEY_ENV = "AIOS_SERVER_KEY"
INSECURE_TCP_ENV = "AIOS_INSECURE_TCP"
ZAP_DOMAIN = b"aios"
SERVER_NAME = "server"
PUBLIC_SUFFIX = ".key"  # zmq.auth's names: NAME.key public, NAME.key_secret secret
SECRET_SUFFIX = ".key_secret"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a file name and a principal: no path, no spaces

log = logging.getLogger("aios.curve")


class CurveKeyError(ValueError):
    """A key is missing, malformed or unsafely stored; the message says which file and what to do."""


def default_keys_dir(environ: Mapping[str, str] = os.environ) -> str:
    if environ.get(KEYS_DIR_ENV):
        return environ[KEYS_DIR_ENV]
    config_home = environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(config_home, "aios", "keys")


def is_tcp(address: str) -> bool:
    return address.startswith("tcp://")


def require_curve() -> None:
    if not zmq.has("curve"):
        raise CurveKeyError(
            f"this libzmq ({zmq.zmq_version()}) was built without CURVE support: tcp:// cannot be "
            f"secured; use an ipc:// address"
        )


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name) or name == SERVER_NAME:
        raise CurveKeyError(
            f"bad key name {name!r}: 1-64 letters, digits, '_', '.', '-', starting with a letter or "
            f"digit, and not {SERVER_NAME!r}"
        )
    return name


class KeyStore:
    """The key directory: the kernel's pair, the authorized clients' public keys, the client pairs made here."""

    def __init__(self, path: str | None = None):
        self.path = os.path.abspath(path or default_keys_dir())
        self.authorized_dir = os.path.join(self.path, "authorized")
        self.clients_dir = os.path.join(self.path, "clients")
        self.server_public = os.path.join(self.path, SERVER_NAME + PUBLIC_SUFFIX)
        self.server_secret = os.path.join(self.path, SERVER_NAME + SECRET_SUFFIX)

    def server_keys(self) -> tuple[bytes, bytes]:
        """The kernel's (public, secret) z85 keys, the pair made on first use."""
        self._make_dirs()
        if not os.path.exists(self.server_secret):
            self._create_pair(self.path, SERVER_NAME)
            log.info("made the kernel's CURVE key pair in %s", self.path)
        return load_secret(self.server_secret)

    def new_client(self, name: str) -> tuple[str, str]:
        """Make a client key pair and authorize it; (authorized public cert, secret cert) paths."""
        check_name(name)
        self._make_dirs()
        authorized = os.path.join(self.authorized_dir, name + PUBLIC_SUFFIX)
        if os.path.exists(authorized):
            raise CurveKeyError(f"a key named {name!r} is already authorized ({authorized}); revoke it first")
        public, secret = self._create_pair(self.clients_dir, name)
        # copy then rename: the authenticator reads the folder at any time and must never see half a file
        staged = os.path.join(self.authorized_dir, f".{name}.staged")
        shutil.copyfile(public, staged)
        os.replace(staged, authorized)
        return authorized, secret

    def authorized(self) -> dict[str, bytes]:
        """Authorized client name → z85 public key, read from the folder now (unreadable files are skipped)."""
        keys: dict[str, bytes] = {}
        try:
            entries = sorted(os.listdir(self.authorized_dir))
        except FileNotFoundError:
            return keys
        for entry in entries:
            name = entry[: -len(PUBLIC_SUFFIX)]
            if not entry.endswith(PUBLIC_SUFFIX) or not NAME_PATTERN.fullmatch(name):
                continue
            try:
                keys[name], _ = zmq.auth.load_certificate(os.path.join(self.authorized_dir, entry))
            except (OSError, ValueError) as error:
                log.warning("skipped authorized key %s: %s", entry, error)
        return keys

    def revoke(self, name: str) -> bool:
        """Remove a client's authorization (and its secret certificate made here); False if it was not authorized."""
        check_name(name)
        removed = _unlink(os.path.join(self.authorized_dir, name + PUBLIC_SUFFIX))
        for suffix in (PUBLIC_SUFFIX, SECRET_SUFFIX):
            _unlink(os.path.join(self.clients_dir, name + suffix))
        return removed

    def check_private(self) -> None:
        """Refuse a key directory or authorized folder that another user owns or can write: whoever can write the
        authorized folder decides who may connect."""
        for path in (self.path, self.authorized_dir):
            info = os.stat(path)
            if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise CurveKeyError(f"{path} must be owned by you and writable by you only (chmod 700 {path})")

    def _make_dirs(self) -> None:
        for path in (self.path, self.authorized_dir, self.clients_dir):
            os.makedirs(path, mode=0o700, exist_ok=True)
        self.check_private()

    @staticmethod
    def _create_pair(directory: str, name: str) -> tuple[str, str]:
        """zmq.auth writes certificates with the umask's mode: make them in a fresh 0700 directory, tighten the
        secret to 0600, then move both into place, so the secret is never readable by others."""
        staging = tempfile.mkdtemp(dir=directory, prefix=".new-")
        try:
            public, secret = zmq.auth.create_certificates(staging, name)
            os.chmod(secret, 0o600)
            os.chmod(public, 0o644)
            final_public, final_secret = (os.path.join(directory, os.path.basename(p)) for p in (public, secret))
            os.replace(secret, final_secret)
            os.replace(public, final_public)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return final_public, final_secret


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def load_secret(path: str) -> tuple[bytes, bytes]:
    """(public, secret) z85 keys of a secret certificate that only its owner can read."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise CurveKeyError(f"no key file {path}") from None
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise CurveKeyError(f"{path} holds a secret key but others can read it or you do not own it (chmod 600 it)")
    public, secret = _load_certificate(path)
    if not secret:
        raise CurveKeyError(f"{path} has no secret key (give the NAME{SECRET_SUFFIX} file, not the public one)")
    return public, secret


def load_public(text_or_path: str) -> bytes:
    """A z85 public key given as its 40 characters, or as the certificate file holding it."""
    if len(text_or_path) == 40 and not os.path.exists(text_or_path):
        try:
            z85.decode(text_or_path)
        except ValueError:
            raise CurveKeyError(f"{SERVER_KEY_ENV}: not a z85 key nor a file: {text_or_path!r}") from None
        return text_or_path.encode("ascii")
    if not os.path.exists(text_or_path):
        raise CurveKeyError(f"no key file {text_or_path}")
    return _load_certificate(text_or_path)[0]


def _load_certificate(path: str) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
        for key in (public, secret):
            if key is not None and len(z85.decode(key)) != 32:
                raise ValueError("a key is not 32 bytes")
    except (OSError, ValueError) as error:
        raise CurveKeyError(f"cannot read the certificate {path}: {error}") from None
    return public, secret


# A folder changed this recently may change again within its mtime's granularity (coarse on some file systems) without
# its signature changing: read it again at each handshake until it has been still for this long.
RACY_S = 2.0


class AuthorizedKeys:
    """The authorized folder's keys, as z85 public key → names, read again only when the folder changed. Used from the
    ZAP thread only. A failed read is never cached: the next handshake tries again (and is refused meanwhile)."""

    def __init__(self, store: KeyStore):
        self._store = store
        self._signature: tuple | None = None
        self._names: dict[bytes, list[str]] = {}
        self.reads = 0  # folder scans so far: what the cache saves

    def names(self, z85_key: bytes) -> list[str]:
        """The names a key is authorized under (one, normally); raises OSError when the folder cannot be read."""
        signature = self._folder_signature()
        if signature is None or signature != self._signature:
            self._signature = None  # until the read below succeeds
            keys = self._store.authorized()
            self.reads += 1
            names: dict[bytes, list[str]] = {}
            for name, key in keys.items():
                names.setdefault(key, []).append(name)
            self._names = names
            fresh = signature is not None and time.time() - signature[2] / 1e9 > RACY_S
            self._signature = signature if fresh else None
        return self._names.get(z85_key, [])

    def _folder_signature(self) -> tuple | None:
        """What changes whenever an entry is added, removed or renamed in the folder (or the folder is replaced)."""
        try:
            info = os.stat(self._store.authorized_dir)
        except FileNotFoundError:
            return None
        return (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_ctime_ns, info.st_mode)


class _Authenticator(ThreadAuthenticator):
    """ZAP handler: admits a CURVE client whose public key is authorized, and names it after its key file.

    It is its own credentials provider: callback() looks the key up in the authorized folder (AuthorizedKeys: read
    again only when the folder changed, so keys added or revoked count without a restart) and remembers the name it
    found, which curve_user_id() (called right after, on the same thread, for an allowed key) hands to libzmq as
    the User-Id."""

    def __init__(self, store: KeyStore, context: zmq.Context):
        super().__init__(context=context, log=log)
        self._store = store
        self.keys = AuthorizedKeys(store)
        self._admitted: dict[bytes, str] = {}  # z85 key → name, between callback() and curve_user_id()

    def callback(self, domain: str, z85_key: bytes) -> bool:
        try:
            names = self.keys.names(z85_key)
        except Exception:  # an exception here would end the ZAP thread: no tcp client could connect again
            log.exception("refused a tcp client: cannot read the authorized keys in %s", self._store.authorized_dir)
            return False
        if len(names) != 1:
            log.warning(
                "refused a tcp client with key %s: %s",
                z85_key.decode("ascii", "replace"),
                "not authorized" if not names else f"the key is authorized under several names {names}",
            )
            return False
        self._admitted[z85_key] = names[0]
        return True

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self._admitted.pop(z85.encode(client_public_key))


class ServerSecurity:
    """The kernel side: its key pair (loaded or made now, so a bad key directory stops aiosd before the model
    loads) and, once secure() is called, the ZAP authenticator. close() it after the ROUTER closes, before the
    context terminates."""

    def __init__(self, store: KeyStore):
        require_curve()
        self.store = store
        self.public_key, self._secret_key = store.server_keys()
        self._authenticator: _Authenticator | None = None

    def secure(self, router: zmq.Socket) -> None:
        """Make router a CURVE server that only authorized clients can reach; call before bind."""
        if self._authenticator is None:
            # ZAP handlers serve the sockets of their own context only
            self._authenticator = _Authenticator(self.store, router.context)
            self._authenticator.start()
            self._authenticator.configure_curve_callback(ZAP_DOMAIN.decode(), self._authenticator)
        router.curve_secretkey = self._secret_key
        router.curve_publickey = self.public_key
        router.curve_server = True
        router.zap_domain = ZAP_DOMAIN
        # fail closed: without this, libzmq admits every CURVE client when no ZAP handler answers
        router.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)

    @property
    def key_reads(self) -> int:
        """How many times the authorized folder has been read for handshakes."""
        return 0 if self._authenticator is None else self._authenticator.keys.reads

    def close(self) -> None:
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None


def secure_client(socket: zmq.Socket, address: str, environ: Mapping[str, str] = os.environ) -> None:
    """Make socket a CURVE client of the kernel when address is tcp://; call before connect. Raises CurveKeyError at
    once when no usable key is configured, instead of a call that would wait for a reply that never comes."""
    if not is_tcp(address) or environ.get(INSECURE_TCP_ENV) == "1":
        return
    require_curve()
    client_key = environ.get(CLIENT_KEY_ENV)
    if not client_key:
        raise CurveKeyError(
            f"{address} is tcp://, which needs a client key: set {CLIENT_KEY_ENV} to a secret "
            f"certificate made by `aios keys new NAME` on the kernel's host (or {INSECURE_TCP_ENV}=1 "
            f"for a kernel started with --insecure-tcp)"
        )
    public, secret = load_secret(client_key)
    server_key = environ.get(SERVER_KEY_ENV) or KeyStore(default_keys_dir(environ)).server_public
    if not environ.get(SERVER_KEY_ENV) and not os.path.exists(server_key):
        raise CurveKeyError(
            f"no kernel public key at {server_key}: set {SERVER_KEY_ENV} to the output of "
            f"`aios keys server` on the kernel's host"
        )
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_serverkey = load_public(server_key)
