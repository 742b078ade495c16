"""What a storage path may be, and the names the store keeps for itself.

Contract:
- `split_path(path)` returns the path's components, or raises a BAD_REQUEST ProtocolError naming the rule broken. A
  path is a str of at most MAX_PATH_BYTES UTF-8 bytes, relative ("notes/today.txt"), made of components separated by
  single "/", each 1..MAX_NAME_BYTES bytes, none "." or "..", none starting with RESERVED_PREFIX, and no control
  character anywhere (C0, DEL, C1 — NUL included). Strings that cannot be UTF-8 encoded (lone surrogates) are refused.
- `split_prefix(prefix)` is the same for a list prefix, except that "" is allowed (everything), a trailing "/" is
  allowed, and the last component may be any partial name (".", ".ai"), since it only filters by string prefix.
- `PrefixMatch` says how a list prefix selects paths: TEXT by string prefix ("no" matches "notes/a"), COMPONENTS by
  whole components ("notes" matches "notes" and "notes/..." only, never "notes-private/..."): what a share of a
  prefix opens, so a grantee's listing never shows a name outside it.
- `space_dirname(space)` maps an opaque namespace id to the name of its directory: "s-" + sha256 hex of the id, or
  "e-" + sha256 hex for an ephemeral space (an id starting with EPHEMERAL_PREFIX), so ephemeral spaces can be found
  and swept on disk without knowing their ids. The id never reaches the file system, so nothing in it ("..", "/",
  NUL) can pick the directory.
- Every name the store itself makes inside a space starts with RESERVED_PREFIX (version files, temporaries), which is
  why user components may not: a user name can never be mistaken for, or collide with, one of ours.

Limits are the usual Linux ones (NAME_MAX 255) so that every component can be one directory name; the path limit keeps
the whole on-disk path well under PATH_MAX (4096) whatever the root.
"""

from __future__ import annotations

import enum
import hashlib
import re

from kernel.storage.errors import bad_request

MAX_PATH_BYTES = 1024
MAX_NAME_BYTES = 255
MAX_SPACE_BYTES = 1024
RESERVED_PREFIX = ".aios"
EPHEMERAL_PREFIX = "eph:"  # the kernel's throwaway agents' spaces: never outlive the manager that made them
SPACE_DIR_PREFIX = "s-"
EPHEMERAL_DIR_PREFIX = "e-"


class PrefixMatch(enum.Enum):
    TEXT = "text"
    COMPONENTS = "components"


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0, DEL, C1: one regex scan, not a Python loop per char


def _encoded(text: object, what: str, limit: int) -> bytes:
    if not isinstance(text, str):
        raise bad_request(f"{what} must be a string, not {type(text).__name__}")
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request(f"{what} is not valid Unicode (lone surrogate)") from None
    if len(raw) > limit:
        raise bad_request(f"{what} is {len(raw)} bytes long; the limit is {limit} bytes")
    found = _CONTROL.search(text)
    if found is not None:
        bad = found.group()
        name = "NUL" if bad == "\x00" else f"U+{ord(bad):04X}"
        raise bad_request(f"{what} contains the control character {name}")
    return raw


def _check_component(name: str, path: str) -> None:
    if name == "":
        raise bad_request(f"path {path!r} has an empty component (leading, trailing or doubled '/')")
    if name in (".", ".."):
        raise bad_request(f"path {path!r} has a {name!r} component; paths are plain names below the space")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise bad_request(f"a component of path {path[:40]!r}... is over {MAX_NAME_BYTES} bytes")
    if name.startswith(RESERVED_PREFIX):
        raise bad_request(f"path {path!r}: names starting with {RESERVED_PREFIX!r} are reserved for the store")


def split_path(path: object) -> list[str]:
    """The components of a valid storage path; BAD_REQUEST otherwise (see the module contract)."""
    _encoded(path, "path", MAX_PATH_BYTES)
    assert isinstance(path, str)
    if path == "":
        raise bad_request("path is empty")
    if path.startswith("/"):
        raise bad_request(f"path {path!r} is absolute; paths are relative to the space")
    parts = path.split("/")
    for name in parts:
        _check_component(name, path)
    return parts


def split_prefix(prefix: object) -> tuple[list[str], str]:
    """(complete directory components, partial last name) of a list prefix; BAD_REQUEST if it is not valid."""
    _encoded(prefix, "prefix", MAX_PATH_BYTES)
    assert isinstance(prefix, str)
    if prefix.startswith("/"):
        raise bad_request(f"prefix {prefix!r} is absolute; prefixes are relative to the space")
    *dirs, partial = prefix.split("/")
    for name in dirs:
        _check_component(name, prefix)
    if len(partial.encode("utf-8")) > MAX_NAME_BYTES:
        raise bad_request(f"the last component of prefix {prefix[:40]!r}... is over {MAX_NAME_BYTES} bytes")
    return dirs, partial


def split_whole_prefix(prefix: object) -> list[str]:
    """The components of a COMPONENTS list prefix ("" or a valid path, "/" trimmed at either end); BAD_REQUEST."""
    _encoded(prefix, "prefix", MAX_PATH_BYTES)
    assert isinstance(prefix, str)
    trimmed = prefix.strip("/")
    return split_path(trimmed) if trimmed else []


def space_dirname(space: object) -> str:
    """The directory name of a namespace id; BAD_REQUEST if the id is not a non-empty, bounded string."""
    if not isinstance(space, str):
        raise bad_request(f"space must be a string, not {type(space).__name__}")
    try:
        raw = space.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request("space is not valid Unicode (lone surrogate)") from None
    if not raw or len(raw) > MAX_SPACE_BYTES:
        raise bad_request(f"space must be 1..{MAX_SPACE_BYTES} bytes, not {len(raw)}")
    kind = EPHEMERAL_DIR_PREFIX if space.startswith(EPHEMERAL_PREFIX) else SPACE_DIR_PREFIX
    return kind + hashlib.sha256(raw).hexdigest()
