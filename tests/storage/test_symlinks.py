"""Symlinks planted inside the store (by someone with access to the data directory) are never followed out of it:
not as a directory of a path, not as a version file, not as a space's own directory."""

import os

import pytest

from ipc.errors import ErrorCode, ProtocolError
from tests.storage.conftest import space_dir, tree

S = "uid:1000/notes"


@pytest.fixture
def outside(tmp_path):
    """A directory next to the root that looks like a store node, with a bait version file."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / ".aios-v000000000001").write_bytes(b"secret")
    (path / "secret").mkdir()
    (path / "secret" / ".aios-v000000000001").write_bytes(b"secret")
    return str(path)


def refusal(call, *args) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        call(*args)
    return info.value


def test_a_symlinked_directory_in_a_path_is_refused(store, root, outside):
    store.write(S, "real/file", b"mine")
    os.symlink(outside, os.path.join(space_dir(root, S), "evil"))
    os.symlink(outside, os.path.join(space_dir(root, S), "real", "evil"))
    before = tree(outside)
    for path in ["evil", "evil/secret", "evil/new", "real/evil/secret", "real/evil/new/deeper"]:
        for call, args in [
            (store.write, (S, path, b"pwned")),
            (store.read, (S, path)),
            (store.delete, (S, path)),
            (store.versions, (S, path)),
        ]:
            error = refusal(call, *args)
            assert error.code is ErrorCode.BAD_REQUEST and "symlink" in error.message, (path, error)
    assert [info.path for info in store.list(S)] == ["real/file"]  # the walk does not enter them
    assert refusal(store.list, S, "evil/").code is ErrorCode.BAD_REQUEST
    assert tree(outside) == before
    assert open(os.path.join(outside, "secret", ".aios-v000000000001"), "rb").read() == b"secret"
    assert store.usage(S)["bytes"] == 4


def test_a_symlink_in_place_of_a_version_is_neither_read_nor_written_through(store, root, outside):
    store.write(S, "f", b"mine")
    node = os.path.join(space_dir(root, S), "f")
    os.symlink(os.path.join(outside, ".aios-v000000000001"), os.path.join(node, ".aios-v000000000002"))
    assert [info.version for info in store.versions(S, "f")] == [1]
    assert refusal(store.read, S, "f", 2).code is ErrorCode.NOT_FOUND
    assert store.write(S, "f", b"next") == 3  # its number is not reused
    assert open(os.path.join(outside, ".aios-v000000000001"), "rb").read() == b"secret"
    store.delete(S, "f")
    assert os.path.islink(os.path.join(node, ".aios-v000000000002"))  # left alone, not followed


def test_a_fifo_in_place_of_a_version_does_not_block(store, root):
    store.write(S, "f", b"mine")
    os.mkfifo(os.path.join(space_dir(root, S), "f", ".aios-v000000000002"))
    assert [info.version for info in store.versions(S, "f")] == [1]
    assert refusal(store.read, S, "f", 2).code is ErrorCode.NOT_FOUND


def test_a_space_directory_replaced_by_a_symlink_is_not_followed(store, root, outside):
    os.symlink(outside, space_dir(root, S))
    before = tree(outside)
    assert refusal(store.write, S, "x", b"pwned").code is ErrorCode.BAD_REQUEST
    assert refusal(store.read, S, "secret").code is ErrorCode.BAD_REQUEST
    assert store.drop_space(S) is True  # removes the link, not its target
    assert tree(outside) == before
    assert store.write(S, "x", b"mine") == 1
