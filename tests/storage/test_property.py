"""Hypothesis: arbitrary path strings, prefixes, versions and bytes given to every method give a result or a
ProtocolError, never another exception, and never create, change or remove anything outside the root, even with a
symlink to the outside planted inside the tree."""

import os
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from ipc.errors import ProtocolError
from kernel.storage import FileInfo, StorageManager, VersionInfo
from tests.storage.conftest import space_dir, tree

S = "uid:1000/notes"
PIECES = [
    "..",
    ".",
    "",
    "a",
    "b",
    "evil",
    ".aios-v000000000001",
    ".aios-tmp-x",
    ".aios",
    "\x00",
    "\n",
    "\x7f",
    "\x85",
    "é",
    "\udc80",
    "🙂",
    "x" * 255,
    "y" * 256,
    "~",
    "\\",
    " ",
]
PATHS = st.one_of(
    st.text(max_size=30),
    st.lists(st.sampled_from(PIECES), max_size=6).map("/".join),
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts)),
    st.binary(max_size=10),
    st.integers(),
    st.none(),
)
VERSIONS = st.one_of(st.none(), st.integers(min_value=-2, max_value=12), st.booleans(), st.text(max_size=2))
DATA = st.one_of(st.binary(max_size=600), st.text(max_size=5), st.none())
CALLS = st.tuples(
    st.sampled_from(["write", "read", "list", "delete", "versions", "rollback", "usage"]),
    st.sampled_from([S, "uid:2", "../..", ""]),
    PATHS,
    DATA,
    VERSIONS,
)


def _call(store: StorageManager, call: tuple):
    name, space, path, data, version = call
    if name == "write":
        return store.write(space, path, data)
    if name == "read":
        return store.read(space, path, version)
    if name == "list":
        return store.list(space, path)
    if name == "rollback":
        return store.rollback(space, path, version)
    if name == "usage":
        return store.usage(space)
    return getattr(store, name)(space, path)


def _check_result(name: str, result) -> None:
    expected = {
        "write": int,
        "rollback": int,
        "read": tuple,
        "list": list,
        "versions": list,
        "usage": dict,
        "delete": type(None),
    }[name]
    assert isinstance(result, expected)
    if name == "list":
        assert all(isinstance(info, FileInfo) for info in result)
    if name == "versions":
        assert all(isinstance(info, VersionInfo) for info in result)
    if name == "read":
        assert isinstance(result[0], bytes) and isinstance(result[1], int)


@settings(max_examples=100, deadline=None)
@given(st.lists(CALLS, min_size=1, max_size=12))
def test_any_input_gives_a_result_or_a_protocol_error_and_stays_inside_root(calls):
    with tempfile.TemporaryDirectory() as sandbox:
        root, outside = os.path.join(sandbox, "root"), os.path.join(sandbox, "outside")
        os.mkdir(outside)
        with open(os.path.join(outside, ".aios-v000000000001"), "wb") as bait:
            bait.write(b"bait")
        # room for the seed's directory "a" (4 KiB, quota.py) and a few more made by the calls
        with StorageManager(root, keep_versions=2, quota_bytes=5 * 4096, max_file_bytes=500, max_files=8) as store:
            store.write(S, "a/b", b"seed")
            os.symlink(outside, os.path.join(space_dir(root, S), "evil"))
            for call in calls:
                try:
                    result = _call(store, call)
                except ProtocolError:
                    continue
                _check_result(call[0], result)
        assert sorted(os.listdir(sandbox)) == ["outside", "root"]
        assert tree(outside) == [".aios-v000000000001"]
        with open(os.path.join(outside, ".aios-v000000000001"), "rb") as bait:
            assert bait.read() == b"bait"
