"""A GGUF file read directly: header, metadata and tensor infos parsed once, tensors as views of one read-only memmap.

read_gguf_file(path) -> GGUFFile:
  .metadata  {key: value}: strings, Python numbers and bools, lists of them for arrays (nested arrays as nested
             lists), plus GGUF.version / GGUF.tensor_count / GGUF.kv_count — the values gguf.GGUFReader's
             field.contents() gives, key for key (tests/engine/test_gguf_file.py checks both real files).
  .tensors   [GGUFTensor]: name, tensor_type (gguf's GGMLQuantizationType), shape (GGML order: innermost first),
             n_elements, n_bytes, data_offset and data, shaped as GGUFReader shapes it: elements for F32/F16/F64 and
             the integer types, raw bytes [..., row bytes] for every block type (BF16 included), never copied.

Why not gguf.GGUFReader: it builds a numpy array per metadata value, so a 262,144-token vocabulary (Gemma 3) is ~800k
small arrays and ~10 s of parsing before a weight is read. Here numeric arrays are one np.frombuffer each and a string
array is one tight loop over the buffer (the tokenizer needs Python strings anyway: they are made once).

Refused with ModelLoadError naming what is wrong, before anything is allocated from it: a bad magic, a version other
than 2 or 3, a big-endian file, counts or lengths that the rest of the file cannot hold (so a garbled header never
allocates more than the file's size), an unknown value or tensor type, arrays nested deeper than 4, duplicate keys or
tensors, more than 4 dimensions, rows not a whole number of blocks, an alignment that is not a power of two, a tensor
not aligned or extending past the end of the file, text that is not UTF-8.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from kernel.engine.loading.load_errors import ModelLoadError

_MAGIC = b"GGUF"
_VERSIONS = (2, 3)
_DEFAULT_ALIGNMENT = 32
_MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_NESTING = 4
_SCALARS = {
    GGUFValueType.UINT8: np.dtype("<u1"),
    GGUFValueType.INT8: np.dtype("<i1"),
    GGUFValueType.UINT16: np.dtype("<u2"),
    GGUFValueType.INT16: np.dtype("<i2"),
    GGUFValueType.UINT32: np.dtype("<u4"),
    GGUFValueType.INT32: np.dtype("<i4"),
    GGUFValueType.FLOAT32: np.dtype("<f4"),
    GGUFValueType.BOOL: np.dtype("?"),
    GGUFValueType.UINT64: np.dtype("<u8"),
    GGUFValueType.INT64: np.dtype("<i8"),
    GGUFValueType.FLOAT64: np.dtype("<f8"),
}
# the fewest bytes one array item of each kind takes: what bounds an array's count by the bytes left
_MIN_ITEM = {**{t: d.itemsize for t, d in _SCALARS.items()}, GGUFValueType.STRING: 8, GGUFValueType.ARRAY: 12}
# tensor types GGUFReader presents as elements; every other type as raw bytes
_ELEMENT_TYPES = {
    GGMLQuantizationType.F32: np.dtype("<f4"),
    GGMLQuantizationType.F16: np.dtype("<f2"),
    GGMLQuantizationType.F64: np.dtype("<f8"),
    GGMLQuantizationType.I8: np.dtype("<i1"),
    GGMLQuantizationType.I16: np.dtype("<i2"),
    GGMLQuantizationType.I32: np.dtype("<i4"),
    GGMLQuantizationType.I64: np.dtype("<i8"),
}
_U32 = struct.Struct("<I").unpack_from
_U64 = struct.Struct("<Q").unpack_from


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    tensor_type: GGMLQuantizationType
    shape: tuple[int, ...]  # GGML order: the innermost (contiguous) dimension first
    n_elements: int
    n_bytes: int
    data_offset: int  # from the start of the file
    data: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class GGUFFile:
    path: Path
    version: int
    alignment: int
    metadata: dict
    value_types: dict[str, GGUFValueType]  # each metadata key's type (ARRAY for arrays)
    tensors: list[GGUFTensor]


class _Cursor:
    """Reads little-endian values from the buffer, every read bounds-checked against the file's size."""

    def __init__(self, buf: memoryview, where: str):
        self.buf, self.pos, self.end, self.where = buf, 0, len(buf), where

    def fail(self, what: str) -> ModelLoadError:
        return ModelLoadError(f"{self.where}: {what} (at byte {self.pos})")

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.end:
            raise self.fail(f"{what} needs {n} bytes, the file has {self.end - self.pos} left (truncated or garbled)")

    def u32(self, what: str) -> int:
        self.need(4, what)
        self.pos += 4
        return _U32(self.buf, self.pos - 4)[0]

    def u64(self, what: str) -> int:
        self.need(8, what)
        self.pos += 8
        return _U64(self.buf, self.pos - 8)[0]

    def count(self, what: str, min_item: int) -> int:
        n = self.u64(what)
        if n * min_item > self.end - self.pos:
            raise self.fail(f"{what} is {n}, more than the {self.end - self.pos} bytes left can hold")
        return n

    def string(self, what: str) -> str:
        n = self.u64(f"{what}'s length")
        self.need(n, what)
        self.pos += n
        try:
            return str(self.buf[self.pos - n : self.pos], "utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(f"{what} is not UTF-8 ({exc.reason})") from exc

    def strings(self, n: int, what: str) -> list[str]:
        """n strings in a row: the one loop a 262k-entry vocabulary goes through."""
        buf, pos, end, out = self.buf, self.pos, self.end, []
        append = out.append
        try:
            for _ in range(n):
                if pos + 8 > end:
                    break
                length = _U64(buf, pos)[0]
                pos += 8
                if length > end - pos:
                    break
                append(str(buf[pos : pos + length], "utf-8"))
                pos += length
        except UnicodeDecodeError as exc:
            self.pos = pos
            raise self.fail(f"{what}[{len(out)}] is not UTF-8 ({exc.reason})") from exc
        self.pos = pos
        if len(out) != n:
            raise self.fail(f"{what}[{len(out)}] runs past the end of the file (truncated or garbled)")
        return out

    def value_type(self, what: str) -> GGUFValueType:
        raw = self.u32(what)
        try:
            return GGUFValueType(raw)
        except ValueError:
            raise self.fail(f"{what} has unknown value type {raw}") from None

    def value(self, kind: GGUFValueType, what: str, depth: int = 0):
        if kind is GGUFValueType.STRING:
            return self.string(what)
        if kind is GGUFValueType.ARRAY:
            if depth >= _MAX_NESTING:
                raise self.fail(f"{what}: arrays nested deeper than {_MAX_NESTING}")
            item = self.value_type(f"{what}'s item type")
            n = self.count(f"{what}'s length", _MIN_ITEM[item])
            if item is GGUFValueType.STRING:
                return self.strings(n, what)
            if item is GGUFValueType.ARRAY:
                return [self.value(item, f"{what}[{i}]", depth + 1) for i in range(n)]
            dtype = _SCALARS[item]
            values = np.frombuffer(self.buf, dtype, n, self.pos).tolist()
            self.pos += n * dtype.itemsize
            return values
        dtype = _SCALARS[kind]
        self.need(dtype.itemsize, what)
        self.pos += dtype.itemsize
        return np.frombuffer(self.buf, dtype, 1, self.pos - dtype.itemsize).tolist()[0]


def read_gguf_file(path: str | Path) -> GGUFFile:
    path = Path(path)
    try:
        mm = np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as exc:  # ValueError: an empty file cannot be mapped
        raise ModelLoadError(f"{path}: cannot map the file ({exc})") from exc
    cur = _Cursor(memoryview(mm), str(path))
    cur.need(8, "the GGUF header")
    if bytes(cur.buf[:4]) != _MAGIC:
        raise ModelLoadError(f"{path}: not a GGUF file (magic {bytes(cur.buf[:4])!r})")
    cur.pos = 4
    version = cur.u32("the version")
    if version & 0xFFFF == 0 and version:
        raise ModelLoadError(f"{path}: a big-endian GGUF file is not supported")
    if version not in _VERSIONS:
        raise ModelLoadError(f"{path}: GGUF version {version} is not supported (2 and 3 are)")
    n_tensors = cur.count("the tensor count", 24)  # name length, dims count, type, offset: 24 bytes at least
    n_kv = cur.count("the metadata count", 12)  # key length, value type
    metadata: dict = {"GGUF.version": version, "GGUF.tensor_count": n_tensors, "GGUF.kv_count": n_kv}
    types = {
        "GGUF.version": GGUFValueType.UINT32,
        "GGUF.tensor_count": GGUFValueType.UINT64,
        "GGUF.kv_count": GGUFValueType.UINT64,
    }
    for i in range(n_kv):
        key = cur.string(f"metadata key {i}")
        if key in metadata:
            raise cur.fail(f"metadata key {key!r} appears twice")
        types[key] = cur.value_type(key)
        metadata[key] = cur.value(types[key], key)
    alignment = _alignment(metadata, types, path)
    infos = [_tensor_info(cur) for _ in range(n_tensors)]
    data_start = -(-cur.pos // alignment) * alignment
    tensors, names = [], set()
    for name, dims, qtype, offset in infos:
        if name in names:
            raise ModelLoadError(f"{path}: tensor {name!r} appears twice")
        names.add(name)
        tensors.append(_tensor(mm, name, dims, qtype, offset, data_start, alignment, path))
    return GGUFFile(path, version, alignment, metadata, types, tensors)


def _alignment(metadata: dict, types: dict, path: Path) -> int:
    if "general.alignment" not in metadata:
        return _DEFAULT_ALIGNMENT
    value = metadata["general.alignment"]
    if types["general.alignment"] is not GGUFValueType.UINT32 or value <= 0 or value & (value - 1):
        raise ModelLoadError(f"{path}: general.alignment={value!r} is not a power of two (uint32)")
    return value


def _tensor_info(cur: _Cursor) -> tuple[str, tuple[int, ...], GGMLQuantizationType, int]:
    name = cur.string("a tensor name")
    n_dims = cur.u32(f"tensor {name!r}'s dimension count")
    if not 1 <= n_dims <= _MAX_DIMS:
        raise cur.fail(f"tensor {name!r} has {n_dims} dimensions (1 to {_MAX_DIMS} are allowed)")
    dims = tuple(cur.u64(f"tensor {name!r}'s dimensions") for _ in range(n_dims))
    raw = cur.u32(f"tensor {name!r}'s type")
    try:
        qtype = GGMLQuantizationType(raw)
    except ValueError:
        raise cur.fail(f"tensor {name!r} has unknown type {raw}") from None
    if qtype not in GGML_QUANT_SIZES:
        raise cur.fail(f"tensor {name!r} has type {qtype.name}, whose block size is not known")
    return name, dims, qtype, cur.u64(f"tensor {name!r}'s offset")


def _tensor(mm, name, dims, qtype, offset, data_start, alignment, path) -> GGUFTensor:
    block, block_bytes = GGML_QUANT_SIZES[qtype]
    if dims[0] % block:
        raise ModelLoadError(f"{path}: tensor {name!r}: rows of {dims[0]} are not whole {qtype.name} blocks of {block}")
    n_elements = int(np.prod(dims, dtype=object))
    n_bytes = n_elements // block * block_bytes
    start = data_start + offset
    if offset % alignment:
        raise ModelLoadError(f"{path}: tensor {name!r} at offset {offset} is not aligned to {alignment} bytes")
    if start + n_bytes > len(mm):
        raise ModelLoadError(
            f"{path}: tensor {name!r} ({n_bytes} bytes at {start}) extends past the end of the file "
            f"({len(mm)} bytes): truncated"
        )
    numpy_shape = tuple(reversed(dims))
    dtype = _ELEMENT_TYPES.get(qtype)
    if dtype is None:
        data = np.frombuffer(mm, np.uint8, n_bytes, start).reshape(*numpy_shape[:-1], dims[0] // block * block_bytes)
    else:
        data = np.frombuffer(mm, dtype, n_elements, start).reshape(numpy_shape)
    return GGUFTensor(name, qtype, dims, n_elements, n_bytes, start, data)
