"""The private runtime directory and the secrets in it: made safe when missing, refused when someone else could use
them.

"Another owner" is real (chown) when the tests run as root, and otherwise simulated by making our uid look different
(monkeypatching os.getuid for the module), since an ordinary user cannot give a file away.
"""

import logging
import os
import stat
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipc import runtime_dir
from ipc.runtime_dir import MAX_SECRET_BYTES, RuntimeDirError, private_dir, read_secret, write_secret

ROOT = os.getuid() == 0


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _make_foreign(path, monkeypatch) -> None:
    if ROOT:
        os.chown(path, 4242, 4242, follow_symlinks=False)
    else:
        real_uid = os.getuid()
        monkeypatch.setattr(runtime_dir.os, "getuid", lambda: real_uid + 1)


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it after."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield os.umask
    os.umask(saved)


# private_dir


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077, 0o277])
def test_a_missing_directory_is_made_0700_whatever_the_umask(tmp_path, umask, mask):
    umask(mask)
    path = tmp_path / "aios"
    assert private_dir(path) == str(path)
    assert stat.S_ISDIR(os.lstat(path).st_mode) and _mode(path) == 0o700


def test_an_existing_private_directory_is_used_as_is(tmp_path):
    path = tmp_path / "aios"
    path.mkdir(mode=0o700)
    (path / "kernel.sock").write_text("")
    assert private_dir(str(path)) == str(path)
    assert _mode(path) == 0o700 and (path / "kernel.sock").exists()


def test_a_symlink_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o755)
    link = tmp_path / "aios"
    link.symlink_to(target)
    with pytest.raises(RuntimeDirError, match="symlink") as refused:
        private_dir(link)
    assert refused.value.path == str(link) and isinstance(refused.value, OSError)
    assert _mode(target) == 0o755  # not "fixed" through the link


def test_a_dangling_symlink_is_refused_and_nothing_is_made(tmp_path):
    link = tmp_path / "aios"
    link.symlink_to(tmp_path / "not-yet")
    with pytest.raises(RuntimeDirError, match="symlink"):
        private_dir(link)
    assert not (tmp_path / "not-yet").exists()


@pytest.mark.parametrize("kind", ["file", "fifo"])
def test_something_that_is_not_a_directory_is_refused(tmp_path, kind):
    path = tmp_path / "aios"
    path.write_text("") if kind == "file" else os.mkfifo(path)
    with pytest.raises(RuntimeDirError, match="not a directory"):
        private_dir(path)


def test_another_owners_directory_is_refused_and_not_chmodded(tmp_path, monkeypatch):
    path = tmp_path / "aios"
    path.mkdir()
    os.chmod(path, 0o777)  # a trap: anyone can read our token, swap our socket
    _make_foreign(path, monkeypatch)
    with pytest.raises(RuntimeDirError, match="owned by uid"):
        private_dir(path)
    assert _mode(path) == 0o777


def test_the_uid_check_alone_refuses_a_private_looking_directory(tmp_path, monkeypatch):
    path = tmp_path / "aios"
    path.mkdir(mode=0o700)
    real_uid = os.getuid()
    monkeypatch.setattr(runtime_dir.os, "getuid", lambda: real_uid + 1)
    with pytest.raises(RuntimeDirError, match=f"uid {real_uid}, not by us"):
        private_dir(path)


@pytest.mark.parametrize("mode", [0o701, 0o710, 0o750, 0o755, 0o777, 0o1777, 0o2770])
def test_our_directory_open_to_group_or_other_is_fixed_and_logged(tmp_path, caplog, mode):
    path = tmp_path / "aios"
    path.mkdir()
    os.chmod(path, mode)
    with caplog.at_level(logging.WARNING, logger="aios.runtime_dir"):
        assert private_dir(path) == str(path)
    assert _mode(path) == 0o700
    assert f"{stat.S_IMODE(mode):04o}" in caplog.text and "0700" in caplog.text


def test_our_open_directory_is_refused_when_fixing_is_off(tmp_path):
    path = tmp_path / "aios"
    path.mkdir()
    os.chmod(path, 0o755)
    with pytest.raises(RuntimeDirError, match="chmod 700"):
        private_dir(path, fix_mode=False)
    assert _mode(path) == 0o755


def test_a_missing_parent_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeDirError, match="cannot be created"):
        private_dir(tmp_path / "no" / "aios")
    assert not (tmp_path / "no").exists()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mode=st.integers(min_value=0, max_value=0o7777), fix=st.booleans())
def test_any_mode_ends_private_or_refused(tmp_path, mode, fix):
    path = tmp_path / f"aios-{mode:o}-{fix}"
    if not path.exists():
        path.mkdir()
    os.chmod(path, mode)
    try:
        private_dir(path, fix_mode=fix)
    except RuntimeDirError:
        assert not fix and mode & 0o077  # refused only when open to others and not allowed to fix it
        assert _mode(path) == mode
    else:
        assert not mode & 0o077 or fix
        assert not _mode(path) & 0o077  # whatever passes is private


def test_default_path_follows_xdg_runtime_dir(monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert runtime_dir.default_path() == "/run/user/1000/aios"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert runtime_dir.default_path() == f"/tmp/aios-{os.getuid()}"


# write_secret / read_secret


@pytest.fixture
def home(tmp_path):
    return private_dir(tmp_path / "aios")


def test_a_secret_is_written_0600_and_read_back(home, umask):
    umask(0o277)  # would leave the owner without write
    path = os.path.join(home, "admin.token")
    write_secret(path, "s3cret")
    assert _mode(path) == 0o600 and read_secret(path) == b"s3cret"
    assert os.listdir(home) == ["admin.token"]  # no temporary left behind


def test_writing_replaces_the_old_secret_as_a_new_file(home):
    path = os.path.join(home, "admin.token")
    write_secret(path, b"old")
    old_inode = os.lstat(path).st_ino
    with open(path, "rb") as reader:  # a reader of the old secret keeps seeing it whole
        write_secret(path, b"new")
        assert reader.read() == b"old"
    assert read_secret(path) == b"new" and os.lstat(path).st_ino != old_inode


def test_writing_over_a_planted_symlink_replaces_the_link_not_its_target(home, tmp_path):
    target = tmp_path / "victim"
    target.write_bytes(b"do not touch")
    path = os.path.join(home, "admin.token")
    os.symlink(target, path)
    write_secret(path, b"token")
    assert not os.path.islink(path) and read_secret(path) == b"token"
    assert target.read_bytes() == b"do not touch"


def test_writing_onto_a_directory_is_a_clear_error_and_leaves_no_temporary(home):
    os.mkdir(os.path.join(home, "admin.token"))
    with pytest.raises(RuntimeDirError, match="cannot be written"):
        write_secret(os.path.join(home, "admin.token"), b"x")
    assert os.listdir(home) == ["admin.token"]


def test_a_too_large_secret_is_not_written(home):
    with pytest.raises(ValueError, match="at most"):
        write_secret(os.path.join(home, "big"), bytes(MAX_SECRET_BYTES + 1))
    assert os.listdir(home) == []


def test_a_missing_secret_is_a_plain_file_not_found(home):
    with pytest.raises(FileNotFoundError):
        read_secret(os.path.join(home, "admin.token"))


def test_a_secret_through_a_symlink_is_refused(home):
    real = os.path.join(home, "real")
    write_secret(real, b"token")
    os.symlink(real, os.path.join(home, "admin.token"))
    with pytest.raises(RuntimeDirError, match="symlink"):
        read_secret(os.path.join(home, "admin.token"))


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o602, 0o620])
def test_a_secret_open_to_group_or_other_is_refused(home, mode):
    path = os.path.join(home, "admin.token")
    write_secret(path, b"token")
    os.chmod(path, mode)
    with pytest.raises(RuntimeDirError, match="may have leaked"):
        read_secret(path)


def test_a_secret_of_another_owner_is_refused(home, monkeypatch):
    path = os.path.join(home, "admin.token")
    write_secret(path, b"token")
    _make_foreign(path, monkeypatch)
    with pytest.raises(RuntimeDirError, match="owned by uid"):
        read_secret(path)


def test_the_uid_check_alone_refuses_a_secret(home, monkeypatch):
    path = os.path.join(home, "admin.token")
    write_secret(path, b"token")
    real_uid = os.getuid()
    monkeypatch.setattr(runtime_dir.os, "getuid", lambda: real_uid + 1)
    with pytest.raises(RuntimeDirError, match="someone else wrote"):
        read_secret(path)


def test_a_fifo_is_refused_without_blocking(home):
    path = os.path.join(home, "admin.token")
    os.mkfifo(path, 0o600)
    outcome = []

    def read():
        try:
            read_secret(path)
        except RuntimeDirError as error:
            outcome.append(str(error))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=60)
    assert not reader.is_alive(), "read_secret blocked on a FIFO"
    assert outcome and "not a regular file" in outcome[0]


def test_an_oversized_file_is_refused(home):
    path = os.path.join(home, "admin.token")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.ftruncate(fd, MAX_SECRET_BYTES + 1)
    os.close(fd)
    with pytest.raises(RuntimeDirError, match="larger than"):
        read_secret(path)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096))
def test_any_bytes_round_trip(home, data):
    path = os.path.join(home, "secret")
    write_secret(path, data)
    assert read_secret(path) == data


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mode=st.integers(min_value=0, max_value=0o777))
def test_a_secret_is_read_only_when_private(home, mode):
    path = os.path.join(home, "secret")
    write_secret(path, b"token")
    os.chmod(path, mode)
    readable = ROOT or mode & 0o400  # root reads whatever the owner bits say
    try:
        assert read_secret(path) == b"token"
    except RuntimeDirError:
        assert mode & 0o077 or not readable
    else:
        assert not mode & 0o077
