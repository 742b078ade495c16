"""Hostile calls against the live kernel services: memory (mem.*), files (fs.*), sharing and grants (access.*), tools
(tool.*, the built-in MCP servers, irreversible calls allowed by policy so they run).

The same reply contract as test_fuzz_kernel.py (fuzz_session.py): every call with a usable id gets exactly one final
reply, none is an `internal` error, the kernel's threads live on. Here the frames reach the real service workers
(SQLite, faiss, versioned files on disk) with near-valid bodies: spaces that are someone else's, ephemeral, empty or
path-like; paths with `..`, absolute, NUL, trailing slashes, 1,024 characters; metadata and filters of any wire value;
versions and ks at their bounds; shares and grants of every capability. One kernel serves the whole property: the
state earlier examples left (files, versions, shares) is part of what is fuzzed. Afterwards an SDK agent's memory and
files still work.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sdk
from kernel.memory.embedder import HashEmbedder
from tests.ipc.test_fuzz_codec import typed_bodies, wire_values
from tests.kernel.fuzz_session import MAX_FRAME_BYTES, REPLY_TIMEOUT_S, FuzzSession, session_settings
from tests.kernel.harness import InProcessKernel

SERVICE_CALLS = [
    "mem.add",
    "mem.search",
    "mem.get",
    "mem.update",
    "mem.delete",
    "mem.list",
    "fs.write",
    "fs.read",
    "fs.list",
    "fs.delete",
    "fs.versions",
    "fs.rollback",
    "fs.search",
    "access.share",
    "access.grant",
    "tool.list",
    "tool.call",
    "tool.pending",
    "tool.approve",
]
spaces = st.sampled_from(
    [
        None,
        None,
        "",
        "eph:a1",
        "uid:0/root",
        "uid:0/../x",
        "../../etc",
        "a" * 160,
        "a" * 161,
        "uid:1000/fuzz1",
        "#files",
        "x/y/z",
        "é/ß",
        "\x00",
    ]
) | st.text(max_size=12)
paths = st.sampled_from(
    [
        "a.txt",
        "dir/b.md",
        "dir/",
        "/etc/passwd",
        "../x",
        "a/../../b",
        ".",
        "..",
        "",
        "a\x00b",
        "x" * 1024,
        "x" * 1025,
        "d/" * 100 + "f",
        "a.txt/child",
        " ",
        "\\x",
    ]
) | st.text(max_size=12)
ids = st.sampled_from(["", "0", "1", "m1", "-1", "a" * 64, "a" * 65]) | st.text(max_size=8)
extreme_ints = st.sampled_from([0, 1, 2, -1, 100, 101, 1 << 40, 1 << 62, (1 << 62) + 1, 2**63 - 1, -(2**63)])
texts = st.text(max_size=40) | st.sampled_from(["", "\x00" * 10, "word " * 2000])
capabilities = st.lists(
    st.sampled_from(
        [
            "proc.view",
            "proc.kill",
            "proc.renice",
            "access.grant",
            "mem.any",
            "fs.any",
            "tool.any",
            "tool.approve",
            "tool:calculator",
            "tool:",
            "root",
            "",
        ]
    ),
    max_size=5,
)
near_valid = {
    "mem.add": st.fixed_dictionaries({"text": texts}, optional={"metadata": wire_values, "space": spaces}),
    "mem.search": st.fixed_dictionaries(
        {"query": texts}, optional={"k": extreme_ints, "filter": wire_values, "space": spaces}
    ),
    "mem.get": st.fixed_dictionaries({"id": ids}, optional={"space": spaces}),
    "mem.update": st.fixed_dictionaries(
        {"id": ids}, optional={"text": texts, "metadata": wire_values, "space": spaces}
    ),
    "mem.delete": st.fixed_dictionaries({"id": ids}, optional={"space": spaces}),
    "mem.list": st.fixed_dictionaries({}, optional={"offset": extreme_ints, "limit": extreme_ints, "space": spaces}),
    "fs.write": st.fixed_dictionaries(
        {"path": paths, "data": st.binary(max_size=64) | st.just(b"\x00" * 70_000)}, optional={"space": spaces}
    ),
    "fs.read": st.fixed_dictionaries({"path": paths}, optional={"version": extreme_ints, "space": spaces}),
    "fs.list": st.fixed_dictionaries({}, optional={"prefix": paths, "space": spaces}),
    "fs.delete": st.fixed_dictionaries({"path": paths}, optional={"space": spaces}),
    "fs.versions": st.fixed_dictionaries({"path": paths}, optional={"space": spaces}),
    "fs.rollback": st.fixed_dictionaries({"path": paths, "version": extreme_ints}, optional={"space": spaces}),
    "fs.search": st.fixed_dictionaries({"query": texts}, optional={"k": extreme_ints, "space": spaces}),
    "access.share": st.fixed_dictionaries(
        {"kind": st.sampled_from(["mem", "fs", "tool", ""]), "grantee": spaces},
        optional={"mode": st.sampled_from(["r", "rw", "none", "x"]), "prefix": paths},
    ),
    "access.grant": st.fixed_dictionaries({"capabilities": capabilities}),
    "tool.list": st.just({}),
    "tool.pending": st.just({}),
    "tool.call": st.fixed_dictionaries(
        {
            "name": st.sampled_from(
                ["calculator", "run_python", "read_file", "write_file", "search_memory", "nope", ""]
            ),
            "arguments": st.dictionaries(
                st.sampled_from(["expression", "code", "path", "data", "query", "text"]),
                st.text(max_size=20) | wire_values,
                max_size=3,
            ),
        }
    ),
    "tool.approve": st.fixed_dictionaries({"id": ids}, optional={"allow": st.booleans()}),
}
service_frames = st.sampled_from(SERVICE_CALLS).flatmap(
    lambda t: st.tuples(st.just("env"), st.just(t), near_valid[t] | near_valid[t] | typed_bodies(t))
)
batches = st.lists(service_frames, min_size=1, max_size=8)


@pytest.fixture(scope="module")
def services_kernel(tmp_path_factory):
    with InProcessKernel(
        f"ipc://{tmp_path_factory.mktemp('fuzzsvc')}/kernel.sock",
        max_frame_bytes=MAX_FRAME_BYTES,
        services=True,
        embedder=HashEmbedder(),
        tools="default",
        tool_approval="allow",
    ) as kernel:
        yield kernel


@pytest.fixture(scope="module")
def session(services_kernel):
    return FuzzSession(services_kernel)


@session_settings(max_examples=150)
@given(hello_priority=st.none() | st.just(0), batch=batches)
def test_hostile_service_calls_each_get_one_reply(session, hello_priority, batch):
    session.run(hello_priority, batch)


def test_services_work_for_a_normal_agent_after_the_fuzz(services_kernel, session):
    with sdk.connect(services_kernel.address, name="after-fuzz", timeout=REPLY_TIMEOUT_S) as kernel:
        memory_id = kernel.memory.add("the kernel survived the fuzz", metadata={"topic": "health"})
        assert kernel.memory.get(memory_id).text == "the kernel survived the fuzz"
        version = kernel.fs.write("health.txt", b"still here")
        assert kernel.fs.read("health.txt") == b"still here"
        assert kernel.fs.write("health.txt", b"again") == version + 1
