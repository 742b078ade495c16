"""bench/storage_bench.py runs end to end on a real directory and prints one row per size with finite ratios."""

from bench import storage_bench


def test_quick_bench_prints_the_table(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(storage_bench, "QUICK_COUNTS", {size: 2 for size in storage_bench.QUICK_COUNTS})
    assert storage_bench.main(["--quick", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("| 4 KiB |", "| 256 KiB |", "| 4 MiB |"))]
    assert [row.split("|")[1].strip() for row in rows] == ["4 KiB", "256 KiB", "4 MiB"]
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert all(float(cell) > 0 for cell in cells[2:])
    assert list(tmp_path.iterdir()) == []  # its scratch directories are removed
