"""File spaces are bounded per principal (owners.py, quota.py): the first write of a new space over the bound is
refused with the quota error and makes nothing; the count is read back from disk by the next manager (a reopen);
ephemeral spaces count with their principal's while they exist; a principal's key matches the digest the kernel puts
in ephemeral names (kernel/services/syscalls.py); unmarked (older) spaces are adopted by the write that names them."""

import os
import shutil
import tempfile
import types

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ipc.errors import ProtocolError
from kernel.services.syscalls import space_of
from kernel.storage import StorageManager
from kernel.storage.errors import quota_code
from kernel.storage.owners import MARKER, owner_of
from tests.storage.conftest import space_dir, tree

LIMITS = dict(quota_bytes=1 << 20, max_file_bytes=1 << 10, max_files=16)
BOUND = 3


def _agent(principal: str, number: int, ephemeral: bool):
    return types.SimpleNamespace(principal=principal, name=f"agent{number}", agent_id=f"a{number}", ephemeral=ephemeral)


def _spaces_on_disk(root: str) -> list[str]:
    return sorted(name for name in os.listdir(os.path.join(root, "spaces")) if not name.startswith(".aios"))


class SpaceBoundMachine(RuleBasedStateMachine):
    """Two principals' lasting and ephemeral spaces against a model of which spaces exist, across reopens (each one a
    new kernel lifetime: a new boot id, and the ephemeral spaces of the last one swept)."""

    def __init__(self):
        super().__init__()
        self.root = tempfile.mkdtemp()
        self.boot = 0
        self.store = StorageManager(self.root, max_spaces=BOUND, **LIMITS)
        self.model: dict[str, str] = {}  # space -> principal, for the spaces on disk

    def teardown(self):
        self.store.close()
        shutil.rmtree(self.root)

    def _space(self, principal, number, ephemeral):
        return space_of(_agent(principal, number, ephemeral), f"boot{self.boot}")

    @rule(principal=st.sampled_from(["uid:1", "uid:2"]), number=st.integers(0, 4), ephemeral=st.booleans())
    def write(self, principal, number, ephemeral):
        space = self._space(principal, number, ephemeral)
        held = sum(1 for owner in self.model.values() if owner == principal)
        try:
            self.store.write(space, "f", b"x")
        except ProtocolError as error:
            assert error.code is quota_code() and "file spaces" in error.message
            assert space not in self.model and held >= BOUND
            return
        assert space in self.model or held < BOUND
        self.model[space] = principal

    @rule(principal=st.sampled_from(["uid:1", "uid:2"]), number=st.integers(0, 4), ephemeral=st.booleans())
    def drop(self, principal, number, ephemeral):
        space = self._space(principal, number, ephemeral)
        assert self.store.drop_space(space) is (self.model.pop(space, None) is not None)

    @rule()
    def reopen(self):
        self.store.close()
        self.boot += 1
        self.store = StorageManager(self.root, max_spaces=BOUND, **LIMITS)
        self.model = {space: owner for space, owner in self.model.items() if not space.startswith("eph:")}

    @invariant()
    def disk_matches_model(self):
        assert len(_spaces_on_disk(self.root)) == len(self.model)
        for space in self.model:
            assert [f.path for f in self.store.list(space)] == ["f"]
            with open(os.path.join(space_dir(self.root, space), MARKER), "rb") as marker:
                assert marker.read() == space.encode()


TestSpaceBound = SpaceBoundMachine.TestCase
TestSpaceBound.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)


@settings(max_examples=200, deadline=None)
@given(
    principal=st.text(min_size=1, max_size=40),
    name=st.text(max_size=20).filter(lambda n: "/" not in n),
    boot=st.text(alphabet="0123456789abcdef", min_size=16, max_size=16),
    number=st.integers(1, 999),
)
def test_an_ephemeral_space_is_charged_to_its_principal(principal, name, boot, number):
    lasting = space_of(types.SimpleNamespace(principal=principal, name=name, ephemeral=False), boot)
    ephemeral = space_of(types.SimpleNamespace(principal=principal, agent_id=f"a{number}", ephemeral=True), boot)
    assert owner_of(lasting) == owner_of(ephemeral)
    assert owner_of(lasting) != owner_of(
        space_of(types.SimpleNamespace(principal=principal + "x", name=name, ephemeral=False), boot)
    )


def test_the_bound_holds_across_a_reopen_and_a_drop_makes_room(make_store, root):
    store = make_store(max_spaces=2)
    store.write("uid:1/a", "f", b"1")
    store.write("uid:1/b", "deep/f", b"2")
    store.write("uid:2/a", "f", b"3")  # another principal's count is its own
    before = tree(root)
    try:
        store.write("uid:1/c", "f", b"4")
    except ProtocolError as error:
        assert error.code is quota_code() and "limit is 2" in error.message
    else:
        raise AssertionError("a third space of uid:1 was made")
    assert tree(root) == before  # nothing of the refused space was made
    store.close()

    store = make_store(max_spaces=2)
    assert store.write("uid:1/a", "f", b"again") == 2  # spaces it holds stay writable
    for space in ("uid:1/c", "eph:0123/" + owner_of("uid:1/x") + "/a1"):
        try:
            store.write(space, "f", b"4")
        except ProtocolError as error:
            assert error.code is quota_code()
        else:
            raise AssertionError(f"{space} was made over the bound after a reopen")
    assert store.drop_space("uid:1/b") is True
    assert store.write("uid:1/c", "f", b"4") == 1


def test_ephemeral_spaces_count_while_they_exist(make_store, root):
    store = make_store(max_spaces=2)
    digest = owner_of("uid:1/x")
    store.write(f"eph:b1/{digest}/a1", "f", b"1")
    store.write(f"eph:b1/{digest}/a2", "f", b"1")
    try:
        store.write("uid:1/lasting", "f", b"1")
    except ProtocolError as error:
        assert error.code is quota_code()
    else:
        raise AssertionError("the ephemeral spaces were not counted")
    store.close()  # a clean shutdown drops them, and their count
    store = make_store(max_spaces=2)
    store.write("uid:1/lasting", "f", b"1")
    store.write(f"eph:b2/{digest}/a1", "f", b"1")


def test_unmarked_spaces_are_adopted_and_bad_markers_not_trusted(make_store, root):
    store = make_store(max_spaces=1)
    store.write("uid:1/old", "f", b"1")
    store.write("uid:9/other", "f", b"1")
    store.close()
    os.unlink(os.path.join(space_dir(root, "uid:1/old"), MARKER))  # as a build before markers left it
    with open(os.path.join(space_dir(root, "uid:9/other"), MARKER), "wb") as forged:
        forged.write(b"uid:1/new")  # names another space: not this directory's id
    os.mkdir(os.path.join(root, "spaces", ".aios-new-0123456789abcdef"))  # a crash mid-create
    store = make_store(max_spaces=1)
    assert ".aios-new-0123456789abcdef" not in os.listdir(os.path.join(root, "spaces"))
    assert store.write("uid:1/new", "f", b"1") == 1  # neither the unmarked nor the forged one counted
    assert store.write("uid:1/old", "f", b"2") == 2  # adopted: its files were already there
    with open(os.path.join(space_dir(root, "uid:1/old"), MARKER), "rb") as marker:
        assert marker.read() == b"uid:1/old"
    store.close()
    store = make_store(max_spaces=1)
    try:
        store.write("uid:1/third", "f", b"1")
    except ProtocolError as error:
        assert error.code is quota_code() and "holds 2" in error.message
    else:
        raise AssertionError("the adopted space was not counted after a reopen")
