import pytest

from analysis.io import read
from jobs import records


def _row(key, mode, ap):
    return {"trial": key, "N": 40, "beta": 0.3, "seed": 0, "mode": mode, "n_init": 20,
            "status": "COMPLETED", "ap50": ap}


def test_rows_roundtrip_with_partitions(tmp_path):
    records.write(tmp_path, "trials", "a", [_row("a", "predicted", 0.5)])
    records.write(tmp_path, "trials", "b", [_row("b", "random", 0.25)])
    assert (tmp_path / "results" / "trials" / "mode=random" / "b.parquet").exists()
    df = read(tmp_path, "trials").sort_values("trial")
    assert df["mode"].tolist() == ["predicted", "random"]
    assert df["ap50"].tolist() == [0.5, 0.25]
    assert records.exists(tmp_path, "trials", "a") is not None
    assert records.exists(tmp_path, "trials", "zzz") is None


def test_unknown_column_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown column"):
        records.write(tmp_path, "trials", "a", [{**_row("a", "random", 0.1), "typo": 1}])
    assert not list(tmp_path.rglob("*.parquet"))


def test_a_temporary_file_is_never_read(tmp_path):
    records.write(tmp_path, "trials", "a", [_row("a", "random", 0.1)])
    part = tmp_path / "results" / "trials" / "mode=random"
    (part / ".b.parquet.123.tmp").write_bytes(b"partial")
    assert len(read(tmp_path, "trials")) == 1
