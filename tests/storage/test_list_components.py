"""Hypothesis: a COMPONENTS listing of any prefix is exactly the stored paths equal to it or below it by whole
components, and a TEXT listing is exactly the paths that start with it as a string."""

import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.storage import PrefixMatch, StorageManager

NAMES = st.sampled_from(["n", "no", "notes", "notes-private", "notesX", "a", "b"])
PATHS = st.lists(NAMES, min_size=1, max_size=3).map("/".join)


@settings(max_examples=40, deadline=None)
@given(
    paths=st.sets(PATHS, min_size=1, max_size=12), prefix=st.lists(NAMES, max_size=2).map("/".join), slash=st.booleans()
)
def test_component_and_text_listings(paths, prefix, slash):
    with (
        tempfile.TemporaryDirectory() as root,
        StorageManager(root, quota_bytes=1 << 20, max_file_bytes=1 << 10, max_files=64) as store,
    ):
        for path in paths:
            store.write("uid:1/s", path, b"x")
        asked = prefix + "/" if slash and prefix else prefix
        whole = [f.path for f in store.list("uid:1/s", asked, PrefixMatch.COMPONENTS)]
        assert whole == sorted(p for p in paths if not prefix or p == prefix or p.startswith(prefix + "/"))
        text = [f.path for f in store.list("uid:1/s", asked)]
        assert text == sorted(p for p in paths if p.startswith(asked))
