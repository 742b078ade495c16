"""Issue 17 items 5, 8, 9, 11c: shares, the audit log, grant tokens and held approvals stay bounded under a hostile
agent, and what they keep is right: the share table against a reference model (also after reload from disk), an audit
flood that cannot erase a share record nor silence another principal, the kernel's own token surviving any number of
grants, and approvals capped per agent with a view that always names every argument."""

import asyncio
import json
import os
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipc.errors import ErrorCode, ProtocolError
from kernel.access.audit import AuditLog
from kernel.access.capabilities import Capability
from kernel.access.shares import ShareTable
from kernel.access.tokens import TokenRegistry
from kernel.services.tools import display
from sdk import KernelError, connect
from sdk.aio import aconnect
from tests.kernel.harness import InProcessKernel, wait_until
from tests.tools.reachable import needs_sandbox_reach

SLOW_REFILL = 1e-9  # a bucket that never refills within a test, however slow the machine

# -- shares ----------------------------------------------------------------------------------------------------------

OWNERS = ["u/a", "u/b", "eph:a1"]
PREFIXES = ["", "notes", "notes/deep", "notes-private"]
PATHS = ["", "notes", "notes/x", "notes/deep/y", "notes-private/z", "other"]
change = st.one_of(
    st.tuples(
        st.just("set"),
        st.sampled_from(["mem", "fs"]),
        st.sampled_from(OWNERS),
        st.sampled_from(OWNERS),
        st.sampled_from(["r", "rw", "none"]),
        st.sampled_from(PREFIXES),
    ),
    st.tuples(st.just("drop"), st.sampled_from(OWNERS)),
    st.tuples(st.just("reload")),
)


def _model_allows(model: dict, kind, owner, grantee, write, path) -> bool:
    def under(prefix: str) -> bool:
        return not prefix or path == prefix or path.startswith(prefix + "/")

    return any(
        mode == "rw" or not write
        for (k, o, g, prefix), mode in model.items()
        if (k, o, g) == (kind, owner, grantee) and under(prefix)
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.lists(change, max_size=40))
def test_the_share_table_matches_a_reference_model_across_reloads(tmp_path, changes):
    path = str(tmp_path / f"shares-{os.urandom(4).hex()}.json")
    limits = {"max_per_owner": 4, "max_total": 8, "changes_per_s": 1e9, "change_burst": 1e9}
    table, model = ShareTable(path, **limits), {}
    try:
        for step in changes:
            if step[0] == "set":
                _, kind, owner, grantee, mode, prefix = step
                key = (kind, owner, grantee, prefix)
                if mode == "none":
                    model.pop(key, None)
                elif key in model or (sum(k[1] == owner for k in model) < 4 and len(model) < 8):
                    model[key] = mode
                else:
                    with pytest.raises(ValueError):
                        table.set(kind, owner, grantee, mode, prefix)
                    continue
                table.set(kind, owner, grantee, mode, prefix)
            elif step[0] == "drop":
                model = {k: m for k, m in model.items() if step[1] not in (k[1], k[2])}
                table.drop_owner(step[1])
            else:
                table.close()  # the last state is written, and read back
                table = ShareTable(path, **limits)
            assert len(table) == len(model)
            for kind in ("mem", "fs"):
                for owner in OWNERS:
                    for grantee in OWNERS:
                        for path_ in PATHS:
                            for write in (False, True):
                                assert table.allows(kind, owner, grantee, write, path_) == _model_allows(
                                    model, kind, owner, grantee, write, path_
                                )
        assert table.flush()
        with open(path) if os.path.exists(path) else open(os.devnull) as file:
            on_disk = json.loads(file.read() or "[]")
        assert {(e["kind"], e["owner"], e["grantee"], e["prefix"]): e["mode"] for e in on_disk} == model
    finally:
        table.close()


def test_share_grants_are_rate_limited_per_owner_and_revokes_never_are(tmp_path):
    table = ShareTable(str(tmp_path / "shares.json"), changes_per_s=SLOW_REFILL, change_burst=20)
    for n in range(20):
        table.set("fs", "u/flooder", f"u/g{n}", "r")
    with pytest.raises(ProtocolError) as busy:
        table.set("fs", "u/flooder", "u/g20", "r")
    assert busy.value.code == ErrorCode.BUSY
    table.set("fs", "u/flooder", "u/g0", "none")  # a revoke is never refused
    assert not table.allows("fs", "u/flooder", "u/g0", False)
    table.set("fs", "u/other", "u/g0", "r")  # another owner has its own bucket
    assert table.allows("fs", "u/other", "u/g0", False)
    table.close()
    assert len(ShareTable(str(tmp_path / "shares.json"))) == 20


def test_many_changes_coalesce_and_close_writes_the_last_state(tmp_path):
    path = str(tmp_path / "shares.json")
    table = ShareTable(path, changes_per_s=1e9, change_burst=1e9, max_total=4000, max_per_owner=256)
    for n in range(3000):
        table.set("mem", f"u/o{n // 200}", f"u/g{n}", "r")
    for _ in range(500):  # a toggling owner
        table.set("mem", "u/t", "u/victim", "rw")
        table.set("mem", "u/t", "u/victim", "none")
    table.set("mem", "u/t", "u/victim", "r")
    table.close()
    reloaded = ShareTable(path)
    assert len(reloaded) == 3001
    assert reloaded.allows("mem", "u/t", "u/victim", False) and not reloaded.allows("mem", "u/t", "u/victim", True)
    reloaded.close()


def test_an_unreadable_table_is_kept_aside_and_denies(tmp_path):
    path = tmp_path / "shares.json"
    path.write_text("{not json")
    table = ShareTable(str(path))
    assert len(table) == 0 and not table.allows("fs", "u/a", "u/b", False)
    assert (tmp_path / "shares.json.unreadable").read_text() == "{not json"
    table.close()


# -- audit -----------------------------------------------------------------------------------------------------------


def _agent(principal: str, name: str = "agent") -> SimpleNamespace:
    return SimpleNamespace(agent_id=f"a-{name}", name=name, principal=principal, pid=os.getpid())


def _lines(path: str) -> list[dict]:
    entries = []
    for name in (path + ".1", path):
        if os.path.exists(name):
            with open(name) as file:
                entries += [json.loads(line) for line in file]
    return entries


def test_a_denial_flood_rotates_only_the_main_log_and_keeps_the_share_record(tmp_path):
    path = str(tmp_path / "audit.jsonl")
    audit = AuditLog(path, max_bytes=64 << 10, denials_per_s=1e9, denial_burst=1e9)  # every denial written
    owner, flooder = _agent("uid:1", "owner"), _agent("uid:2", "flooder")
    audit.record(agent=owner, syscall="access.share", decision="allow", target="fs:uid:1/reader:r:notes")
    for n in range(50_000):
        audit.record(agent=flooder, syscall="fs.read", decision="deny", target=f"uid:1/owner#{n}")
    assert audit.flush(120)
    audit.close()
    main = _lines(path)
    assert not any(e["syscall"] == "access.share" for e in main)  # the flood did rotate the main log away
    kept = _lines(audit.privileged_path)
    assert [e["target"] for e in kept if e["syscall"] == "access.share"] == ["fs:uid:1/reader:r:notes"]
    written = sum(e["decision"] == "deny" and e["syscall"] == "fs.read" for e in main)
    assert written <= (2 * (64 << 10)) // 150  # bounded on disk


def test_denials_are_rate_limited_per_principal_and_summarized(tmp_path):
    path = str(tmp_path / "audit.jsonl")
    audit = AuditLog(path, denials_per_s=SLOW_REFILL, denial_burst=100, summary_interval_s=3600)
    owner, flooder, victim = _agent("uid:1", "owner"), _agent("uid:2", "flooder"), _agent("uid:3", "victim")
    audit.record(agent=owner, syscall="access.grant", decision="allow", target="proc.view")
    for n in range(50_000):
        audit.record(agent=flooder, syscall="fs.read", decision="deny", target=f"t{n}")
    audit.record(agent=victim, syscall="fs.read", decision="deny", target="the victim's denial")
    audit.record(agent=owner, syscall="tool.call", decision="deny", target="write_file", privileged=True)
    audit.close()  # writes the pending summaries
    entries = _lines(path)
    assert sum(e["principal"] == "uid:2" and e["syscall"] == "fs.read" for e in entries) == 100
    assert [e["count"] for e in entries if e["syscall"] == "audit.suppressed" and e["principal"] == "uid:2"] == [49_900]
    assert any(e["target"] == "the victim's denial" for e in entries)
    privileged = [e["syscall"] for e in _lines(audit.privileged_path)]
    assert privileged == ["access.grant", "tool.call"]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(counts=st.lists(st.integers(0, 400), min_size=1, max_size=5), burst=st.integers(1, 50))
def test_every_denial_is_written_or_counted(tmp_path, counts, burst):
    path = str(tmp_path / f"audit-{os.urandom(4).hex()}.jsonl")
    audit = AuditLog(path, denials_per_s=SLOW_REFILL, denial_burst=burst, max_queued_denials=64, max_queued=128)
    for principal, count in enumerate(counts):
        for _ in range(count):
            audit.record(agent=_agent(f"uid:{principal}"), syscall="mem.get", decision="deny")
    audit.close()
    entries = _lines(path)
    written = sum(e["syscall"] == "mem.get" for e in entries)
    accounted = sum(e.get("count", 0) for e in entries if e["syscall"] in ("audit.suppressed", "audit.dropped"))
    assert written + accounted == sum(counts)
    for principal in range(len(counts)):
        assert sum(e["principal"] == f"uid:{principal}" and e["syscall"] == "mem.get" for e in entries) <= burst


# -- grant tokens ----------------------------------------------------------------------------------------------------


def test_the_kernels_own_token_survives_any_number_of_grants():
    tokens = TokenRegistry(None, max_grants=64, max_per_granter=16)
    own = tokens.mint(frozenset([Capability.FS_ANY, Capability.MEM_ANY]), pinned=True)
    first = tokens.mint(frozenset([Capability.PROC_VIEW]), granter="uid:1")
    for _ in range(1000):
        tokens.mint(frozenset([Capability.PROC_VIEW]), granter="uid:2")  # evicts only uid:2's own
    assert tokens.capabilities(own) == {Capability.FS_ANY, Capability.MEM_ANY}
    assert tokens.capabilities(first) == {Capability.PROC_VIEW}
    for n in range(64 - 17):
        tokens.mint(frozenset(), granter=f"uid:{100 + n}")
    with pytest.raises(ProtocolError) as full:
        tokens.mint(frozenset(), granter="uid:999")
    assert full.value.code == ErrorCode.BUSY
    assert tokens.capabilities(first) == {Capability.PROC_VIEW} and tokens.capabilities(own) is not None
    assert tokens.capabilities("f" * 48) is None


# -- approvals -------------------------------------------------------------------------------------------------------


def test_the_approval_view_names_every_argument_whatever_the_values():
    shown = display(
        {"content": "x" * (4 << 20), "path": "notes/a.txt", "mode": {"deep": [[["y" * 1000]] * 50]}},
        ["path", "content"],
    )
    assert shown.startswith('path="notes/a.txt", content="xxx') and "(4194304 chars)" in shown
    assert "mode=" in shown and len(shown) < 2000
    assert "\x1b" not in display({"\x1b[2J": "\u202e"}, [])


@settings(max_examples=100, deadline=None)
@given(
    arguments=st.dictionaries(
        st.text(max_size=64),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=2000) | st.binary(max_size=100),
            lambda inner: st.lists(inner, max_size=10) | st.dictionaries(st.text(max_size=20), inner, max_size=10),
        ),
        max_size=32,
    )
)
def test_the_approval_view_is_bounded_and_shows_every_name(arguments):
    shown = display(arguments, [])
    for name in arguments:
        assert json.dumps(name)[1:-1] + "=" in shown
    assert len(shown) <= len(arguments) * 40_000 and shown.isascii()


@pytest.fixture(scope="module")
def tool_kernel(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bounds-kernel")
    with InProcessKernel(
        f"ipc://{directory}/kernel.sock",
        services=True,
        tools="default",
        approval_timeout_s=600.0,
        max_frame_bytes=4 << 20,
    ) as running:  # aiosd's frame limit
        yield running


@needs_sandbox_reach()  # a bystander calls the sandboxed calculator
def test_approvals_are_capped_per_agent_in_count_and_bytes(tool_kernel):
    def operator_do(action):
        with connect(tool_kernel.address, token=tool_kernel.admin_token) as operator:
            return action(operator)

    def hoarders(operator):
        return [p for p in operator.tools.pending() if p.agent_name == "hoarder"]

    async def hold_calls():
        loop = asyncio.get_running_loop()
        off_loop = lambda action: loop.run_in_executor(None, operator_do, action)  # the client's loop runs on
        async with await aconnect(tool_kernel.address, name="hoarder") as hoarder:
            held = [
                asyncio.ensure_future(hoarder.tools.call("write_file", {"path": f"f{n}.txt", "content": "x"}))
                for n in range(8)
            ]
            await off_loop(lambda op: wait_until(lambda: len(hoarders(op)) == 8, what="eight held calls"))
            with pytest.raises(KernelError) as busy:
                await hoarder.tools.call("write_file", {"path": "ninth.txt", "content": "x"})
            assert busy.value.code == "busy"
            ids = [p.approval_id for p in await off_loop(hoarders)]
            assert len(set(ids)) == 8 and all(i.startswith("p") and "-" in i for i in ids)
            await off_loop(lambda op: [op.tools.approve(i, allow=False) for i in ids])
            outcomes = await asyncio.gather(*held, return_exceptions=True)
            assert all(isinstance(o, KernelError) and o.code == "permission_denied" for o in outcomes)

            big = "y" * (3 << 20)
            first = asyncio.ensure_future(hoarder.tools.call("write_file", {"content": big, "path": "big.txt"}))
            view = (await off_loop(lambda op: wait_until(lambda: hoarders(op), what="the big call held")))[0]
            assert view.arguments.startswith('path="big.txt", content="yyy') and len(view.arguments) < 1000
            with pytest.raises(KernelError) as too_big:  # 3 + 3 MiB held would pass 4 MiB per agent
                await hoarder.tools.call("write_file", {"path": "big2.txt", "content": big})
            assert too_big.value.code == "busy"

            def bystander_calls():  # another agent is not held up by the hoarder
                with connect(tool_kernel.address, name="bystander") as bystander:
                    return bystander.tools.call("calculate", {"expression": "2 + 2"}).text.strip()

            assert await loop.run_in_executor(None, bystander_calls) == "4"
            await off_loop(lambda op: op.tools.approve(view.approval_id, allow=False))
            with pytest.raises(KernelError):
                await first

    asyncio.run(hold_calls())
