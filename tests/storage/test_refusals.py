"""Every refusal the API makes, by rule, on every method that takes a path; and the near-limit values it accepts."""

import os

import pytest

from ipc.errors import ErrorCode, ProtocolError
from tests.storage.conftest import LIMITS, tree

S = "uid:1000/notes"

BAD_PATHS = [
    ("", "empty"),
    ("/etc/passwd", "absolute"),
    ("..", "'..'"),
    ("../outside", "'..'"),
    ("a/../../b", "'..'"),
    ("a/./b", "'.'"),
    (".", "'.'"),
    ("a//b", "empty component"),
    ("a/", "empty component"),
    ("a\x00b", "NUL"),
    ("a\nb", "U+000A"),
    ("tab\there", "U+0009"),
    ("del\x7f", "U+007F"),
    ("c1\x85", "U+0085"),
    ("x" * 256, "over 255 bytes"),
    ("é" * 128, "over 255 bytes"),  # 256 bytes in UTF-8, 128 characters
    ("/".join(["a" * 200] * 6), "limit is 1024"),
    ("lone\udc80surrogate", "surrogate"),
    (".aios-v000000000001", "reserved"),
    ("a/.aios-tmp-0123", "reserved"),
    (".aios-lock", "reserved"),
    (".aiosanything/x", "reserved"),
    (b"bytes/path", "must be a string"),
    (None, "must be a string"),
    (7, "must be a string"),
]

GOOD_PATHS = [
    ".hidden",
    "a..b",
    "...",
    "dir with spaces/file name",
    "ünïcødé/🙂",
    "x" * 255,
    "é" * 127,
    "/".join(["b" * 203] * 5),
    "back\\slash",
    "aios",
    ".aio",
]


def refusal(call, *args) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        call(*args)
    return info.value


@pytest.mark.parametrize("path,why", BAD_PATHS, ids=[repr(path)[:30] for path, _ in BAD_PATHS])
def test_bad_paths_are_refused_by_every_method(store, root, path, why):
    before = tree(root)
    for call, args in [
        (store.write, (S, path, b"x")),
        (store.read, (S, path)),
        (store.delete, (S, path)),
        (store.versions, (S, path)),
        (store.rollback, (S, path, 1)),
    ]:
        error = refusal(call, *args)
        assert error.code is ErrorCode.BAD_REQUEST, call
        assert why in error.message, error.message
    assert tree(root) == before


@pytest.mark.parametrize("path", GOOD_PATHS, ids=[path[:20] for path in GOOD_PATHS])
def test_unusual_but_valid_paths_round_trip(store, path):
    assert len(path.encode()) <= 1024
    assert store.write(S, path, path.encode()) == 1
    assert store.read(S, path) == (path.encode(), 1)
    assert [info.path for info in store.list(S)] == [path]


@pytest.mark.parametrize(
    "prefix,why",
    [
        ("/abs", "absolute"),
        ("a//", "empty component"),
        ("../", "'..'"),
        ("a\x00", "NUL"),
        ("x" * 256, "over 255 bytes"),
        (3, "must be a string"),
    ],
)
def test_bad_prefixes_are_refused(store, prefix, why):
    error = refusal(store.list, S, prefix)
    assert error.code is ErrorCode.BAD_REQUEST and why in error.message


def test_partial_last_prefix_components_are_allowed(store):
    store.write(S, ".dot/x", b"1")
    assert [info.path for info in store.list(S, ".")] == [".dot/x"]
    assert [info.path for info in store.list(S, ".dot/")] == [".dot/x"]


def test_payload_over_the_file_limit_is_refused_with_the_limit_and_writes_nothing(store, root):
    limit = LIMITS["max_file_bytes"]
    before = tree(root)
    error = refusal(store.write, S, "big", b"x" * (limit + 1))
    assert error.code is ErrorCode.TOO_LARGE and str(limit) in error.message and str(limit + 1) in error.message
    assert tree(root) == before
    assert store.write(S, "big", b"x" * limit) == 1


def test_a_stored_file_over_a_lowered_limit_is_refused_on_read(make_store):
    store = make_store(max_file_bytes=100)
    store.write(S, "f", b"x" * 100)
    store.close()
    store = make_store(max_file_bytes=10)
    assert refusal(store.read, S, "f").code is ErrorCode.TOO_LARGE


@pytest.mark.parametrize("version", [0, -1, True, "1", 1.0, None])
def test_bad_versions_are_refused(store, version):
    store.write(S, "f", b"x")
    if version is not None:
        assert refusal(store.read, S, "f", version).code is ErrorCode.BAD_REQUEST
    assert refusal(store.rollback, S, "f", version).code is ErrorCode.BAD_REQUEST


def test_missing_things_are_not_found(store):
    store.write(S, "f", b"x")
    for call, args in [
        (store.read, (S, "g")),
        (store.read, (S, "f", 2)),
        (store.versions, (S, "g")),
        (store.delete, (S, "g")),
        (store.rollback, (S, "f", 9)),
        (store.read, ("nobody", "f")),
    ]:
        assert refusal(call, *args).code is ErrorCode.NOT_FOUND, (call, args)


@pytest.mark.parametrize("space", ["", "x" * 1025, None, b"uid:0", "\udc80"])
def test_bad_space_ids_are_refused(store, space):
    assert refusal(store.write, space, "f", b"x").code is ErrorCode.BAD_REQUEST
    assert refusal(store.list, space).code is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize("data", ["text", 5, None, [1, 2], memoryview(b"abcdef")[::2]])
def test_data_must_be_contiguous_bytes(store, data):
    assert refusal(store.write, S, "f", data).code is ErrorCode.BAD_REQUEST


def test_asking_about_unknown_spaces_creates_and_remembers_nothing(store, root):
    before = tree(root)
    for number in range(50):
        assert store.usage(f"nobody-{number}")["bytes"] == 0
        assert store.list(f"nobody-{number}") == []
    assert tree(root) == before and store._usage == {}


def test_bad_limits_are_refused_at_construction(root):
    from kernel.storage import StorageManager

    for bad in [dict(keep_versions=0), dict(quota_bytes=-1), dict(max_files=True), dict(max_file_bytes=1.5)]:
        with pytest.raises(ValueError):
            StorageManager(root, **{**LIMITS, **bad})
    assert not os.path.exists(root)
