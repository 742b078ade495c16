import pytest

from kernel.context.snapshot import MAGIC, SnapshotError, check_restorable, header_reserve, read_header, write_header
from kernel.engine.core.interface import KVLayout, KVMeta

LAYOUT = KVLayout(model_id="SmolLM2-135M-Instruct", n_layers=30, n_kv_heads=3, head_dim=64, dtype="float32")


def make_meta(tokens=(5, 6, 7, 8), rng=b"\x01\x02"):
    n_kv = len(tokens) - 1
    return KVMeta(
        layout=LAYOUT,
        token_ids=tuple(tokens),
        prompt_len=2,
        n_kv_tokens=n_kv,
        nbytes=n_kv * LAYOUT.bytes_per_token(),
        rng_state=rng,
    )


def record(meta):
    reserve = header_reserve(LAYOUT, len(meta.token_ids))
    buf = memoryview(bytearray(reserve + meta.nbytes))
    buf[reserve:] = bytes(range(256)) * (meta.nbytes // 256) + bytes(meta.nbytes % 256)
    write_header(buf, meta, reserve)
    return buf, reserve


@pytest.mark.parametrize("rng", [b"\x01\x02" * 2600, None])
def test_header_round_trips(rng):
    meta = make_meta(tokens=range(100, 2149), rng=rng)
    buf, reserve = record(meta)
    decoded, payload_offset = read_header(buf)
    assert decoded == meta and payload_offset == reserve and payload_offset % 64 == 0


def test_wrong_magic_and_version_are_rejected():
    buf, _ = record(make_meta())
    buf[:8] = b"NOTKVSNP"
    with pytest.raises(SnapshotError, match="magic"):
        read_header(buf)
    buf[:8] = MAGIC
    buf[8:10] = (99).to_bytes(2, "little")
    with pytest.raises(SnapshotError, match="version 99"):
        read_header(buf)


def test_truncated_record_is_rejected():
    buf, reserve = record(make_meta())
    with pytest.raises(SnapshotError, match="past the record"):
        read_header(buf[: reserve + 10])
    with pytest.raises(SnapshotError, match="at least"):
        read_header(buf[:10])


def test_restorable_only_into_same_layout_and_extending_tokens():
    meta = make_meta()
    check_restorable(meta, LAYOUT, [5, 6, 7, 8])
    check_restorable(meta, LAYOUT, [5, 6, 7, 8, 9, 10])
    other = KVLayout(model_id=LAYOUT.model_id, n_layers=30, n_kv_heads=3, head_dim=64, dtype="bfloat16")
    with pytest.raises(SnapshotError, match="layout"):
        check_restorable(meta, other, [5, 6, 7, 8])
    with pytest.raises(SnapshotError, match="prefix"):
        check_restorable(meta, LAYOUT, [5, 6, 9, 8, 1])
    with pytest.raises(SnapshotError, match="prefix"):
        check_restorable(meta, LAYOUT, [5, 6, 7])


def test_header_larger_than_its_reservation_is_refused():
    meta = make_meta(rng=b"x" * (1 << 20))
    buf = memoryview(bytearray(header_reserve(LAYOUT, 4) + meta.nbytes))
    with pytest.raises(SnapshotError, match="exceeds"):
        write_header(buf, meta, header_reserve(LAYOUT, 4))
