"""Files (and memory, where the model is not needed) through the real syscall path: each agent's own space, kept
across its runs; another's space only through a share or the operator's capability; denials audited."""

import os
import types

import pytest

from sdk import KernelError, connect
from tests.kernel.harness import InProcessKernel, wait_until


@pytest.fixture
def kernel(tmp_path):
    with InProcessKernel(f"ipc://{tmp_path}/kernel.sock", services=True, memory_options=None) as running:
        yield running


def _code(call) -> str:
    with pytest.raises(KernelError) as caught:
        call()
    return caught.value.code


def test_files_round_trip_with_versions_and_rollback(kernel):
    with connect(kernel.address, name="writer") as k:
        assert k.fs.write("notes/a.txt", "one") == 1
        assert k.fs.write("notes/a.txt", b"two") == 2
        assert k.fs.read("notes/a.txt") == b"two" and k.fs.read("notes/a.txt", version=1) == b"one"
        assert [v.version for v in k.fs.versions("notes/a.txt")] == [1, 2]
        assert k.fs.rollback("notes/a.txt", 1) == 3 and k.fs.read("notes/a.txt") == b"one"
        k.fs.write("other.bin", bytes(range(256)))
        assert sorted(f.path for f in k.fs.list()) == ["notes/a.txt", "other.bin"]
        assert [f.path for f in k.fs.list("notes")] == ["notes/a.txt"]
        k.fs.delete("other.bin")
        assert _code(lambda: k.fs.read("other.bin")) == "not_found"
        for bad in ("../escape", "/etc/passwd", "a/\x00b", "a//b"):
            assert _code(lambda bad=bad: k.fs.write(bad, "x")) == "bad_request"


def test_an_agents_files_outlive_its_run_and_an_ephemeral_agents_do_not(kernel):
    with connect(kernel.address, name="keeper") as k:
        k.fs.write("kept.txt", "still here")
    with connect(kernel.address, name="keeper") as k:
        assert k.fs.read("kept.txt") == b"still here"
    with connect(kernel.address, token=kernel.admin_token) as operator:
        with connect(kernel.address, name="throwaway", ephemeral=True) as k:
            k.fs.write("gone.txt", "soon gone")
            # the name the kernel gives it (kernel/services/syscalls.py), not a guess: seen holding the file first
            space = kernel.services.syscalls.space_of(
                types.SimpleNamespace(ephemeral=True, principal=f"uid:{os.getuid()}", agent_id=k.agent_id)
            )
            assert [f.path for f in operator.fs.list(space=space)] == ["gone.txt"]
        # dropped once the kernel sees the connection close (asynchronously)
        wait_until(lambda: operator.fs.list(space=space) == [], what="the ephemeral space dropped")
        assert operator.fs.read("kept.txt", space=f"uid:{os.getuid()}/keeper") == b"still here"


def test_another_agents_files_need_a_share_and_denials_are_audited(kernel):
    owner_space = f"uid:{os.getuid()}/owner"
    with connect(kernel.address, name="owner") as owner, connect(kernel.address, name="reader") as reader:
        owner.fs.write("public/a.txt", "shared")
        owner.fs.write("private/b.txt", "secret")
        assert _code(lambda: reader.fs.read("public/a.txt", space=owner_space)) == "permission_denied"
        owner.share("fs", "reader", "r", prefix="public")
        assert reader.fs.read("public/a.txt", space=owner_space) == b"shared"
        assert _code(lambda: reader.fs.read("private/b.txt", space=owner_space)) == "permission_denied"
        assert _code(lambda: reader.fs.write("public/a.txt", "defaced", space=owner_space)) == "permission_denied"
        owner.share("fs", "reader", "rw", prefix="public")
        assert reader.fs.write("public/a.txt", "edited", space=owner_space) == 2
        owner.share("fs", "reader", "none", prefix="public")
        assert _code(lambda: reader.fs.read("public/a.txt", space=owner_space)) == "permission_denied"
    with connect(kernel.address, token=kernel.admin_token) as operator:  # fs.any
        assert operator.fs.read("private/b.txt", space=owner_space) == b"secret"
    entries = kernel.audit_records()
    denied = [(e["syscall"], e["target"]) for e in entries if e["decision"] == "deny"]
    assert denied.count(("fs.read", owner_space)) == 3 and ("fs.write", owner_space) in denied
    assert any(
        e["syscall"] == "fs.read" and e["decision"] == "allow" and e["reason"] == "holds fs.any" for e in entries
    )


def test_shares_persist_across_a_kernel_restart(tmp_path):
    data = str(tmp_path / "data")
    for attempt in range(2):
        with InProcessKernel(f"ipc://{tmp_path}/k{attempt}.sock", services=True, data_dir=data) as kernel:
            with connect(kernel.address, name="owner") as owner, connect(kernel.address, name="reader") as reader:
                if attempt == 0:
                    owner.fs.write("doc.txt", "v1")
                    owner.share("fs", "reader", "r")
                assert reader.fs.read("doc.txt", space=f"uid:{os.getuid()}/owner") == b"v1"


def test_a_service_that_cannot_start_answers_with_an_error_and_the_kernel_serves_on(tmp_path):
    with (
        InProcessKernel(f"ipc://{tmp_path}/k.sock", services=True, storage_options={"no_such_option": 1}) as kernel,
        connect(kernel.address) as k,
    ):
        assert _code(lambda: k.fs.write("a.txt", "x")) == "internal"
        assert k.generate("abc", max_tokens=2)
