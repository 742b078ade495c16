"""Prompt text of an exact token length, reproducible from a seed.

Every word below is a single token of the default model's byte-level BPE vocabulary when it follows a space (the
tokenizer keeps " word" whole), so a text of n space-led words is exactly n tokens: workloads ask for token lengths and
get them without loading a tokenizer. tests/bench checks the claim against the real tokenizer.
"""

from __future__ import annotations

import random

WORDS = tuple(
    """
the of and to in is was for that on with as by at from it his an are were which be this has he also or had not first
one their its new after but who they have her she two been other when there all during into school time may years more
most only over city some world would where later up such used many can state about national out known university
united then made year part team american three number between both under people while game life well before film
high south north east west water house river light small large early long great market power music family group
system control public local general area order field study line work play point plan book story place word road land
home hand head body mind idea fact case week month day night morning evening model data table letter garden window
paper stone tree forest mountain island ocean valley bridge train station village
""".split()
)


def words_text(rng: random.Random, n_tokens: int) -> str:
    """n_tokens space-led words drawn from WORDS: exactly n_tokens tokens, and safe to append to any text."""
    if n_tokens < 0:
        raise ValueError(f"n_tokens must be non-negative, got {n_tokens}")
    return "".join(" " + rng.choice(WORDS) for _ in range(n_tokens))
