"""Memory through the real syscall path with the real embedding model: an agent's memories, kept across its runs,
semantic search, files found by meaning (fs.search), another agent's memory only through a share."""

import os

import pytest

from sdk import KernelError, connect
from tests.kernel.harness import InProcessKernel, wait_until


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    directory = tmp_path_factory.mktemp("memory-kernel")
    with InProcessKernel(f"ipc://{directory}/kernel.sock", services=True) as running:
        yield running


def test_memories_are_found_by_meaning_and_kept_across_runs(kernel):
    with connect(kernel.address, name="notes") as k:
        cat = k.memory.add("My cat Tom sleeps on the red sofa.", {"kind": "pet"})
        k.memory.add("The quarterly budget meeting is on Friday.", {"kind": "work"})
        k.memory.add("Paris is the capital of France.", {"kind": "fact"})
    with connect(kernel.address, name="notes") as k:  # a later run of the same agent
        hits = k.memory.search("where does the kitten nap?", k=3)
        assert hits[0].id == cat and hits[0].metadata == {"kind": "pet"} and hits[0].score > hits[1].score
        assert [h.id for h in k.memory.search("kitten", k=3, filter={"kind": "work"})] != [cat]
        k.memory.update(cat, text="My cat Tom sleeps in the garden.")
        assert k.memory.get(cat).text == "My cat Tom sleeps in the garden."
        k.memory.delete(cat)
        with pytest.raises(KernelError) as gone:
            k.memory.get(cat)
        assert gone.value.code == "not_found"


def test_files_are_searchable_by_meaning(kernel):
    with connect(kernel.address, name="writer") as k:
        k.fs.write("recipes/soup.txt", "Tomato soup: simmer tomatoes with garlic and basil for twenty minutes.")
        k.fs.write("travel/plan.txt", "Train to Berlin on Monday, hotel near the station.")
        k.fs.write("blob.bin", bytes([0xFF, 0xFE]) * 10)  # not text: stored, not indexed
        # indexing runs after each write returned, on the memory worker
        hits = wait_until(lambda: k.fs.search("how do I cook a vegetable dinner?", k=2) or None, what="files indexed")
        assert hits[0].metadata["path"] == "recipes/soup.txt"
        k.fs.write("recipes/soup.txt", "Lemon cake: butter, sugar, eggs, flour and lemon zest.")
        wait_until(lambda: "Lemon" in k.fs.search("dessert baking", k=1)[0].text, what="the new version indexed")
        assert sum(h.metadata["path"] == "recipes/soup.txt" for h in k.fs.search("food", k=5)) == 1


def test_another_agents_memory_needs_a_share(kernel):
    owner_space = f"uid:{os.getuid()}/diary"
    with connect(kernel.address, name="diary") as owner, connect(kernel.address, name="friend") as friend:
        owner.memory.add("I planted tulips in the spring.")
        with pytest.raises(KernelError) as denied:
            friend.memory.search("flowers", space=owner_space)
        assert denied.value.code == "permission_denied"
        owner.share("mem", "friend", "r")
        assert "tulips" in friend.memory.search("flowers", k=1, space=owner_space)[0].text
        with pytest.raises(KernelError) as denied:
            friend.memory.add("graffiti", space=owner_space)
        assert denied.value.code == "permission_denied"
