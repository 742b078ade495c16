"""The gateway's API keys: each key names the agent it acts as, that agent's priority and allowance, and its grants.

The keys file is JSON, written atomically with mode 0600 and read only if it is private to its owner (ipc/runtime_dir
secrets rules: no symlink, owned by this user, no group/other access). It holds only SHA-256 digests of the keys: a
key is 32 random bytes, so a digest cannot be reversed and comparing digests needs no slow hash. The plain key is
shown once, when it is made (`aios gateway keys add`). The gateway re-reads the file when its modification time
changes, so keys added or revoked take effect without a restart.

Entry fields: id (short, for listing and revoking), sha256, agent (the kernel agent name), priority (the agent's
priority at hello), max_priority (the highest x-aios-priority header the key may ask for), grants (capabilities the
agent holds, as `aios run --grant` gives them), tokens_per_minute and max_tokens_total (the key's token quotas, asked
for at hello: the kernel applies them when they are below its own, aiosd --quota-*; absent or null: the kernel's).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field

from ipc import runtime_dir
from ipc.messages import MAX_NAME_CHARS, MAX_QUOTA_TOKENS, PRIORITY_MAX, PRIORITY_MIN
from kernel.access.capabilities import parse as parse_capabilities

KEY_PREFIX = "sk-aios-"
FILE_VERSION = 1


class KeyFileError(ValueError):
    """The keys file is missing, unsafe or malformed, or an entry would be invalid."""


@dataclass(frozen=True)
class KeyEntry:
    id: str
    sha256: str
    agent: str
    priority: int = 0
    max_priority: int = 0
    grants: tuple[str, ...] = field(default_factory=tuple)
    created: float = 0.0
    tokens_per_minute: int | None = None
    max_tokens_total: int | None = None

    def allows(self, priority: int) -> bool:
        return PRIORITY_MIN <= priority <= self.max_priority


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def make_entry(
    agent: str,
    priority: int = 0,
    max_priority: int | None = None,
    grants: list[str] = (),
    tokens_per_minute: int | None = None,
    max_tokens_total: int | None = None,
) -> tuple[str, KeyEntry]:
    """A new key (the plain text, shown once) and its entry; KeyFileError for out-of-range values."""
    max_priority = priority if max_priority is None else max_priority
    if not (agent and len(agent) <= MAX_NAME_CHARS and agent.isprintable()):
        raise KeyFileError(f"an agent name is 1..{MAX_NAME_CHARS} printable characters")
    if not (PRIORITY_MIN <= priority <= max_priority <= PRIORITY_MAX):
        raise KeyFileError(f"need {PRIORITY_MIN} <= priority <= max_priority <= {PRIORITY_MAX}")
    parse_capabilities(list(grants))  # ValueError naming an unknown capability
    check_quota("tokens_per_minute", tokens_per_minute)
    check_quota("max_tokens_total", max_tokens_total)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, KeyEntry(
        id="k" + secrets.token_hex(4),
        sha256=digest(key),
        agent=agent,
        priority=priority,
        max_priority=max_priority,
        grants=tuple(grants),
        created=round(time.time(), 3),
        tokens_per_minute=tokens_per_minute,
        max_tokens_total=max_tokens_total,
    )


def check_quota(name: str, value) -> None:
    """A key's quota is absent (None) or 1..MAX_QUOTA_TOKENS tokens; KeyFileError otherwise."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_QUOTA_TOKENS
    ):
        raise KeyFileError(f"{name} must be a positive number of tokens (at most {MAX_QUOTA_TOKENS}), not {value!r}")


def load(path: str) -> list[KeyEntry]:
    try:
        data = json.loads(runtime_dir.read_secret(path))
        if data.get("version") != FILE_VERSION:
            raise KeyFileError(f"{path}: unsupported keys file version {data.get('version')!r}")
        entries = [KeyEntry(**{**entry, "grants": tuple(entry.get("grants", ()))}) for entry in data["keys"]]
        for entry in entries:
            check_quota("tokens_per_minute", entry.tokens_per_minute)
            check_quota("max_tokens_total", entry.max_tokens_total)
        return entries
    except FileNotFoundError:
        raise KeyFileError(
            f"no keys file at {path} (make one with `aios gateway keys add AGENT --keys {path}`)"
        ) from None
    except runtime_dir.RuntimeDirError as error:
        raise KeyFileError(str(error)) from None
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise KeyFileError(f"{path}: malformed keys file ({error})") from None


def save(path: str, entries: list[KeyEntry]) -> None:
    body = {"version": FILE_VERSION, "keys": [{**asdict(e), "grants": list(e.grants)} for e in entries]}
    try:
        runtime_dir.write_secret(path, json.dumps(body, indent=1))
    except (runtime_dir.RuntimeDirError, ValueError) as error:
        raise KeyFileError(str(error)) from None


def add(
    path: str,
    agent: str,
    priority: int = 0,
    max_priority: int | None = None,
    grants: list[str] = (),
    tokens_per_minute: int | None = None,
    max_tokens_total: int | None = None,
) -> str:
    """Add a key to the file (made if missing); returns the plain key."""
    entries = load(path) if os.path.exists(path) else []
    key, entry = make_entry(agent, priority, max_priority, grants, tokens_per_minute, max_tokens_total)
    save(path, entries + [entry])
    return key


def revoke(path: str, key_id: str) -> bool:
    entries = load(path)
    kept = [e for e in entries if e.id != key_id]
    if len(kept) == len(entries):
        return False
    save(path, kept)
    return True


class KeyRing:
    """The keys in force, by digest, re-read when the file changes. An unreadable file after a change keeps the keys
    last read (a half-written edit must not lock everyone out) and says so through `problem`."""

    def __init__(self, path: str):
        self.path = path
        self.problem: str | None = None
        self._by_digest = {e.sha256: e for e in load(path)}
        self._mtime = os.stat(path).st_mtime_ns

    def lookup(self, key: str) -> KeyEntry | None:
        self._refresh()
        return self._by_digest.get(digest(key))

    def _refresh(self) -> None:
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError as error:  # gone: fail closed, nobody gets in until it is back
            self._by_digest, self._mtime = {}, None
            self.problem = f"{self.path}: {error.strerror}"
            return
        if mtime == self._mtime:
            return
        try:
            self._by_digest = {e.sha256: e for e in load(self.path)}
            self._mtime, self.problem = mtime, None
        except KeyFileError as error:
            self.problem = str(error)
