"""A GGUF matrix left where the file has it: its bytes are a view of one read-only memory map, decoded only on demand.

WeightFile maps a GGUF file once (read-only, shared: the pages are the page cache's, never copied) and hands out views
of tensor byte ranges; release(offset, nbytes) drops a range's pages from this process's resident set
(madvise(MADV_DONTNEED): the next read faults them back in from the page cache, so releasing a range something still
reads is safe, never wrong). GGUFBlocks is one 2-D tensor of it, in any GGUF type, [rows, columns] in torch's order:

    raw()               uint8 [rows, row bytes]: the stored blocks (a view when the rows keep the file's order)
    raw_rows(ids)       the stored blocks of the selected rows only
    dequantize()        float32 [rows, columns]: gguf's reference dequantizer, what the float load computes
    dequantize_rows(ids) float32 [len(ids), columns] of the selected rows (an embedding lookup)
    group_quantized()   GroupQuantized (quant_tensor.py) for Q4_0/Q4_1/Q4_K/Q8_0: the stored codes as int8, a transient
                        form for kernels that read it; None for other types
    release()           the tensor's pages out of this process's resident set (see above)

row_order is the rows' order as the model reads them (llama's q/k rotary unpermute): a whole row's blocks move
together, so permuting rows of the stored bytes is exact.

file_matrix(...) is how the loader makes one: a Reexpressed (a GGUFBlocks) for the types block_convert.REEXPRESSED
lists (none at present: Q5_K and Q5_1 are multiplied as stored), whose qtype, raw() and raw_rows() are the target
type's while dequantize() stays the file's values; a plain GGUFBlocks otherwise. decodable(qtype) says whether gguf's
dequantizer reads a type: the loader refuses a matrix of any other type, naming it. Invariant: nothing here writes to
the map, and nothing decodes more than the rows asked for.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize

from kernel.engine.loading.block_convert import REEXPRESSED, reexpress
from kernel.engine.loading.quant_tensor import GroupQuantized, from_q4_0, from_q4_1, from_q4_k, from_q8_0

_GROUP_DECODERS = {
    GGMLQuantizationType.Q4_0: from_q4_0,
    GGMLQuantizationType.Q4_1: from_q4_1,
    GGMLQuantizationType.Q4_K: from_q4_k,
    GGMLQuantizationType.Q8_0: from_q8_0,
}
# (bits, lowest code, group) of the types group_quantized() decodes
_CODE_FORMS = {
    GGMLQuantizationType.Q4_0: (4, -8, 32),
    GGMLQuantizationType.Q4_1: (4, 0, 32),
    GGMLQuantizationType.Q4_K: (4, 0, 32),
    GGMLQuantizationType.Q8_0: (8, -128, 32),
}
_PAGE = mmap.PAGESIZE


class WeightFile:
    """One read-only shared map of a file (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.size = len(self._map)

    def view(self, offset: int, nbytes: int) -> np.ndarray:
        """uint8 [nbytes] at offset, a read-only view of the map (no copy)."""
        if offset < 0 or nbytes < 0 or offset + nbytes > self.size:
            raise ValueError(f"{self.path}: bytes [{offset}, {offset + nbytes}) are outside the file ({self.size})")
        return np.frombuffer(self._map, dtype=np.uint8, count=nbytes, offset=offset)

    def release(self, offset: int, nbytes: int) -> None:
        """Drop the pages of [offset, offset + nbytes) (whole pages around it) from this process's resident set."""
        start = offset // _PAGE * _PAGE
        end = min(self.size, -(-(offset + nbytes) // _PAGE) * _PAGE)
        if end > start and hasattr(self._map, "madvise"):
            self._map.madvise(mmap.MADV_DONTNEED, start, end - start)


@dataclass(frozen=True, eq=False)
class GGUFBlocks:
    file: WeightFile
    offset: int  # of the tensor's first byte in the file
    qtype: GGMLQuantizationType
    shape: tuple[int, int]  # (rows, columns): GGML's dimensions reversed
    row_order: np.ndarray | None = None  # int64 [rows]: stored row of each model row; None = the file's order

    @property
    def row_bytes(self) -> int:
        per_block, block_bytes = GGML_QUANT_SIZES[self.qtype]
        return self.shape[1] // per_block * block_bytes

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.row_bytes

    @property
    def bits(self) -> int | None:
        """Bits per code of the types group_quantized() decodes (4 or 8), else None."""
        return _CODE_FORMS[self.qtype][0] if self.qtype in _CODE_FORMS else None

    @property
    def low(self) -> int | None:
        return _CODE_FORMS[self.qtype][1] if self.qtype in _CODE_FORMS else None

    @property
    def group(self) -> int | None:
        return _CODE_FORMS[self.qtype][2] if self.qtype in _CODE_FORMS else None

    @property
    def stored_qtype(self) -> GGMLQuantizationType:
        """The type the file holds (Reexpressed presents another one as qtype)."""
        return self.qtype

    @property
    def stored_row_bytes(self) -> int:
        per_block, block_bytes = GGML_QUANT_SIZES[self.stored_qtype]
        return self.shape[1] // per_block * block_bytes

    def _stored(self) -> np.ndarray:
        rows = self.shape[0]
        return self.file.view(self.offset, rows * self.stored_row_bytes).reshape(rows, self.stored_row_bytes)

    def _file_rows(self, ids=None) -> np.ndarray:
        """The stored bytes of the model's rows ids (all when None), in the model's order: a view when it can be."""
        stored = self._stored()
        if ids is None:
            return stored if self.row_order is None else stored[self.row_order]
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        return stored[ids if self.row_order is None else self.row_order[ids]]

    def raw(self) -> np.ndarray:
        """uint8 [rows, row bytes] in the model's row order: a view of the map unless rows are reordered."""
        return self._file_rows()

    def raw_rows(self, ids) -> np.ndarray:
        """uint8 [len(ids), row bytes] of the model's rows ids (a copy of those rows only)."""
        return self._file_rows(ids)

    def dequantize(self) -> torch.Tensor:
        """float32 [rows, columns], by gguf's reference dequantizer: the file's values."""
        return self._floats(self._file_rows())

    def dequantize_rows(self, ids) -> torch.Tensor:
        """float32 [len(ids), columns] of the selected rows: the file's values."""
        if isinstance(ids, torch.Tensor):
            ids = ids.numpy()
        return self._floats(self._file_rows(ids))

    def group_quantized(self) -> GroupQuantized | None:
        """The stored codes and scales (Q4_0, Q4_1, Q4_K, Q8_0), or None for other types."""
        decode = _GROUP_DECODERS.get(self.qtype)
        return None if decode is None else decode(self.raw())

    def release(self) -> None:
        self.file.release(self.offset, self.shape[0] * self.stored_row_bytes)

    def __getitem__(self, rows: slice) -> GGUFBlocks:
        """Rows start:stop of the matrix, still the file's bytes (rows are whole blocks, so the cut is exact): how a
        fused matrix (phi3's qkv, gate_up) becomes its parts (gguf_names.split_fused)."""
        start, stop, step = rows.indices(self.shape[0])
        if step != 1 or stop <= start:
            raise ValueError(f"row slices are contiguous and non-empty, got {rows}")
        if self.row_order is not None:  # only llama's q/k are reordered, and they are never fused
            raise ValueError("a reordered matrix is not cut by rows")
        return dataclasses.replace(
            self, offset=self.offset + start * self.stored_row_bytes, shape=(stop - start, self.shape[1])
        )

    def _floats(self, raw: np.ndarray) -> torch.Tensor:
        """The stored bytes raw (the file's type) as float32."""
        n, qtype = raw.shape[0], self.stored_qtype
        if qtype is GGMLQuantizationType.F32:
            values = raw.view(np.float32).copy()  # its own memory: the map is read-only
        elif qtype is GGMLQuantizationType.F16:
            values = raw.view(np.float16).astype(np.float32)
        else:
            values = dequantize(raw, qtype)  # a new array
        return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32).reshape(n, self.shape[1]))


@dataclass(frozen=True, eq=False)
class Reexpressed(GGUFBlocks):
    """A matrix whose file type the kernels do not multiply (block_convert.REEXPRESSED), presented as the type it
    converts to: qtype is the target, raw() / raw_rows() the target's bytes, computed from the file's on each call
    (one matrix at a time, when its product is built: nothing is held between calls); dequantize() and
    dequantize_rows() stay the file's own values, so float modes, lookups and requantizations read what the file
    says, and only a product kept in the target type multiplies the converted values."""

    stored: GGMLQuantizationType = GGMLQuantizationType.F32

    @property
    def stored_qtype(self) -> GGMLQuantizationType:
        return self.stored

    def raw(self) -> np.ndarray:
        return reexpress(self._file_rows(), self.stored, self.qtype)

    def raw_rows(self, ids) -> np.ndarray:
        return reexpress(self._file_rows(ids), self.stored, self.qtype)

    def group_quantized(self) -> GroupQuantized | None:
        return None


def decodable(qtype: GGMLQuantizationType) -> bool:
    """Whether gguf's reference dequantizer reads this type (every type a matrix may be stored in must be)."""
    if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
        return True
    per_block, block_bytes = GGML_QUANT_SIZES[qtype]
    try:
        dequantize(np.zeros((1, block_bytes), dtype=np.uint8), qtype)
    except (NotImplementedError, ValueError):
        return False
    return True


def file_matrix(
    file: WeightFile, offset: int, qtype: GGMLQuantizationType, shape: tuple[int, int], row_order=None
) -> GGUFBlocks:
    """The GGUFBlocks for a file's matrix: Reexpressed where block_convert re-expresses its type (and the row length
    allows the target), else as stored."""
    target = REEXPRESSED.get(qtype)
    if target is not None and shape[1] % GGML_QUANT_SIZES[target][0] == 0:
        return Reexpressed(file, offset, target, shape, row_order, stored=qtype)
    return GGUFBlocks(file, offset, qtype, shape, row_order)
