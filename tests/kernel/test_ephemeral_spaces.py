"""Ephemeral spaces never leak: named by a kernel-unique id (a random boot id per lifetime, so agent ids restarting
at a1 never meet an old space), removed at the agent's end (files, memory, the file index, shares), at a clean
shutdown, and by the managers' sweep when they next open after a crash. Two kernel lifetimes run against one data
directory; a crash is a real child process killed with its manager open."""

import json
import os
import subprocess
import sys
import types

from ipc.errors import ErrorCode
from kernel.access.shares import ShareTable
from kernel.memory.manager import MemoryManager
from kernel.services.syscalls import ServiceSyscalls
from kernel.storage import StorageManager
from sdk import connect
from tests.kernel.harness import InProcessKernel, wait_until
from tests.kernel.test_share_listing import HashEmbedder

LIMITS = dict(quota_bytes=1 << 20, max_file_bytes=1 << 16, max_files=64)


def _spaces_on_disk(data: str) -> list[str]:
    return sorted(os.listdir(os.path.join(data, "files", "spaces")))


def _lifetime(tmp_path, data: str, number: int):
    return InProcessKernel(f"ipc://{tmp_path}/k{number}.sock", services=True, data_dir=data, embedder=HashEmbedder())


def test_a_new_lifetimes_ephemeral_agent_sees_nothing_of_an_old_one(tmp_path):
    data = str(tmp_path / "data")
    with _lifetime(tmp_path, data, 0) as kernel:
        first = kernel.services.syscalls.boot
        with connect(kernel.address, name="throwaway", ephemeral=True) as old:
            old_id = old.agent_id
            old.fs.write("secret.txt", "old agent's secret")
            old.memory.add("old agent's memory")
            old.share("fs", "reader", "r")
            old.share("mem", "reader", "r")
            assert any(name.startswith("e-") for name in _spaces_on_disk(data))
            # still connected when the kernel stops: the clean shutdown must drop it
    assert not any(name.startswith("e-") for name in _spaces_on_disk(data))

    with _lifetime(tmp_path, data, 1) as kernel:
        assert kernel.services.syscalls.boot != first
        assert not [e for e in kernel.services.syscalls.shares.entries() if e.owner.startswith("eph:")]
        with connect(kernel.address, name="throwaway", ephemeral=True) as new:
            assert new.agent_id == old_id  # agent ids restart: the space name must not
            assert new.fs.list() == [] and new.memory.list() == []
            assert new.fs.search("secret") == [] and new.memory.search("memory") == []
            new.fs.write("mine.txt", "new")
            assert [f.path for f in new.fs.list()] == ["mine.txt"]
    assert not [e for e in json.load(open(os.path.join(data, "shares.json"))) if e["owner"].startswith("eph:")]


def test_an_ending_agent_takes_its_files_memory_index_and_shares(tmp_path):
    data = str(tmp_path / "data")
    with _lifetime(tmp_path, data, 0) as kernel, connect(kernel.address, token=kernel.admin_token) as operator:
        syscalls = kernel.services.syscalls
        with connect(kernel.address, name="throwaway", ephemeral=True) as agent:
            record = types.SimpleNamespace(ephemeral=True, principal=f"uid:{os.getuid()}", agent_id=agent.agent_id)
            space = syscalls.space_of(record)
            agent.fs.write("notes/a.txt", "indexed text")
            agent.memory.add("a memory")
            agent.share("fs", "reader", "r", prefix="notes")
            wait_until(lambda: operator.memory.list(space=space + "#files"), what="the file indexed")
            assert operator.memory.list(space=space) and operator.fs.list(space=space)
            assert [e.owner for e in syscalls.shares.entries()] == [space]
        wait_until(
            lambda: not any(name.startswith("e-") for name in _spaces_on_disk(data)),
            what="the ephemeral file space dropped",
        )
        wait_until(
            lambda: not operator.memory.list(space=space) and not operator.memory.list(space=space + "#files"),
            what="the ephemeral memory dropped",
        )
        assert operator.fs.list(space=space) == [] and syscalls.shares.entries() == []


_CRASH = """
import os, sys
from kernel.storage import StorageManager
store = StorageManager(sys.argv[1], quota_bytes=1 << 20, max_file_bytes=1 << 16, max_files=64)
store.write("eph:deadbeef/0123/a1", "left/behind.txt", b"crash")
store.write("uid:1/keep", "kept.txt", b"kept")
os._exit(0)                      # no close(): what a crash or kill -9 leaves
"""


def test_the_next_open_sweeps_what_a_crash_left(tmp_path):
    root = str(tmp_path / "files")
    subprocess.run([sys.executable, "-c", _CRASH, root], check=True, cwd=os.getcwd())
    assert any(name.startswith("e-") for name in os.listdir(os.path.join(root, "spaces")))
    with StorageManager(root, **LIMITS) as store:
        assert not any(name.startswith("e-") for name in os.listdir(os.path.join(root, "spaces")))
        assert store.list("eph:deadbeef/0123/a1") == [] and store.read("uid:1/keep", "kept.txt") == (b"kept", 1)
        store.write("eph:x/y/a1", "f", b"1")
        assert store.drop_ephemeral() == 1 and store.list("eph:x/y/a1") == []


def test_memory_and_shares_of_an_old_lifetime_are_swept(tmp_path):
    directory = tmp_path / "mem"
    with MemoryManager(directory, HashEmbedder(), ephemeral_prefixes=()) as memory:  # a build that kept them on disk
        memory.add("eph:old/x/a1", ["stale"])
        memory.add("uid:1/keep", ["kept"])
    with MemoryManager(directory, HashEmbedder()) as memory:
        assert memory.list("eph:old/x/a1") == [] and len(memory.list("uid:1/keep")) == 1
        memory.add("eph:new/x/a1", ["now"])
        assert memory.drop_ephemeral() == 1 and memory.list("eph:new/x/a1") == []
    path = str(tmp_path / "shares.json")
    table = ShareTable(path)
    table.set("fs", "eph:old/x/a1", "uid:1/reader", "r")
    table.set("fs", "uid:1/owner", "eph:old/x/a2", "r")
    table.set("fs", "uid:1/owner", "uid:1/reader", "r")
    table.close()
    table = ShareTable(path)
    ServiceSyscalls(None, None, table, audit=None)
    assert [(e.owner, e.grantee) for e in table.entries()] == [("uid:1/owner", "uid:1/reader")]
    table.close()


def test_memory_spaces_are_bounded_per_principal(tmp_path):
    with MemoryManager(tmp_path / "mem", HashEmbedder(), max_spaces=3) as memory:
        for name in ("a", "b", "c"):
            memory.add(f"uid:1/{name}", ["x"])
        memory.add("uid:1/a", ["more in an existing space"])
        try:
            memory.add("uid:1/d", ["one too many"])
        except Exception as error:
            assert getattr(error, "code", None) is ErrorCode.QUOTA
        else:
            raise AssertionError("a fourth space of one principal was made")
        memory.add("uid:2/a", ["another principal has its own"])
        memory.drop_space("uid:1/c")
        memory.add("uid:1/d", ["room again"])
