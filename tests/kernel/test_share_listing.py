"""fs.list through a prefix share, on the real syscall path: the share of "notes" lists "notes" and "notes/..."
only, never a sibling whose name merely starts with the same letters ("notes-private/..."); the owner's own
listing keeps its string-prefix meaning."""

import os

import numpy as np
import pytest

from sdk import KernelError, connect
from tests.kernel.harness import InProcessKernel


class HashEmbedder:
    """A deterministic stand-in for the embedding model (file indexing runs on every write)."""

    dim = 8
    name = "hash-test"

    def embed(self, texts):
        return np.array(
            [[float((hash(t) >> (4 * i)) & 0xF) + 1.0 for i in range(self.dim)] for t in texts], dtype=np.float32
        )


@pytest.fixture
def kernel(tmp_path):
    with InProcessKernel(f"ipc://{tmp_path}/kernel.sock", services=True, embedder=HashEmbedder()) as running:
        yield running


def test_a_prefix_share_lists_whole_components_only(kernel):
    owner_space = f"uid:{os.getuid()}/owner"
    with connect(kernel.address, name="owner") as owner, connect(kernel.address, name="reader") as reader:
        for path in ("notes", "notes/a.txt", "notes/deep/b.txt", "notes-private/secret.txt", "notesX", "other"):
            owner.fs.write(path, path)
        owner.share("fs", "reader", "r", prefix="notes")
        for prefix in ("notes", "notes/", "/notes/"):
            assert sorted(f.path for f in reader.fs.list(prefix, space=owner_space)) == [
                "notes",
                "notes/a.txt",
                "notes/deep/b.txt",
            ]
        assert [f.path for f in reader.fs.list("notes/deep", space=owner_space)] == ["notes/deep/b.txt"]
        for outside in ("", "note", "notes-private", "other"):
            with pytest.raises(KernelError) as denied:
                reader.fs.list(outside, space=owner_space)
            assert denied.value.code == "permission_denied"
        # the owner's own listing is still by string prefix
        assert sorted(f.path for f in owner.fs.list("notes")) == [
            "notes",
            "notes-private/secret.txt",
            "notes/a.txt",
            "notes/deep/b.txt",
            "notesX",
        ]
