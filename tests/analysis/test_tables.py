import math

import pandas as pd
import pytest

from analysis.io import ResultsError, read
from analysis.tables import selection_table


def _rows():
    rows = []
    # random: N=40 seeds 0,1 → AP 0.10, 0.20 → 15.0 ± 7.1 ; N=80 → 0.30, 0.40 → 35.0 ± 7.1
    for seed, (a, b) in enumerate([(0.10, 0.30), (0.20, 0.40)]):
        rows += [dict(N=40, beta=None, seed=seed, mode="random", status="COMPLETED", ap50=a),
                 dict(N=80, beta=None, seed=seed, mode="random", status="COMPLETED", ap50=b)]
    # β=0.3: N=40 → 0.25, 0.35 (30.0 ± 7.1, best); N=80 → one failed seed → 0.20 only
    rows += [dict(N=40, beta=0.3, seed=0, mode="predicted", status="COMPLETED", ap50=0.25),
             dict(N=40, beta=0.3, seed=1, mode="predicted", status="COMPLETED", ap50=0.35),
             dict(N=80, beta=0.3, seed=0, mode="predicted", status="COMPLETED", ap50=0.20),
             dict(N=80, beta=0.3, seed=1, mode="predicted", status="FAILED", ap50=math.nan)]
    return pd.DataFrame(rows)


def test_table4_shape_golden():
    text = selection_table(_rows(), mode="predicted")
    lines = text.strip().splitlines()
    assert lines[-4:] == [
        "| | 40 | 80 |",
        "|---|---|---|",
        "| Random subset | 15.0 ± 7.1 | **35.0 ± 7.1** |",
        "| β = 0.3 | **30.0 ± 7.1** | 20.0 (1/2) |",
    ]
    assert "1 failed trial(s)" in lines[0]
    assert "seeds 0, 1" in lines[0]


def test_empty_results_say_so(tmp_path):
    with pytest.raises(ResultsError, match="no trials results"):
        read(tmp_path, "trials")
    with pytest.raises(ValueError, match="no trials"):
        selection_table(pd.DataFrame(columns=["N", "seed", "status", "mode", "beta", "ap50"]))


def test_corrupt_file_is_named(tmp_path):
    folder = tmp_path / "results" / "trials" / "mode=random"
    folder.mkdir(parents=True)
    (folder / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ResultsError, match="bad.parquet"):
        read(tmp_path, "trials")


def test_table4_has_one_row_per_baseline_strategy_like_random():
    rows = _rows()
    extra = []
    for seed in (0, 1):
        extra += [dict(N=n, beta=None, seed=seed, mode=m, status="COMPLETED", ap50=ap + seed / 10)
                  for m, ap in (("coreset", 0.05), ("entropy", 0.5), ("lowest", 0.1))
                  for n in (40, 80)]
        extra += [dict(N=n, beta=b, seed=seed, mode="band", status="COMPLETED", ap50=0.2)
                  for b in (0.3, 0.6) for n in (40, 80)]
    text = selection_table(pd.concat([rows, pd.DataFrame(extra)]), mode="predicted")
    assert text.strip().splitlines()[-7:] == [
        "| Random subset | 15.0 ± 7.1 | 35.0 ± 7.1 |",
        "| β = 0.3 | 30.0 ± 7.1 | 20.0 (1/2) |",
        "| Lowest score | 15.0 ± 7.1 | 15.0 ± 7.1 |",
        "| Band, β = 0.3 | 20.0 ± 0.0 | 20.0 ± 0.0 |",
        "| Band, β = 0.6 | 20.0 ± 0.0 | 20.0 ± 0.0 |",
        "| Class entropy | **55.0 ± 7.1** | **55.0 ± 7.1** |",
        "| Core-set (k-center) | 10.0 ± 7.1 | 10.0 ± 7.1 |",
    ]
    # a sweep of baselines alone still has its table (random and baseline rows)
    only = pd.DataFrame(extra)
    only = only[only["mode"] != "band"]
    lines = selection_table(only, mode="predicted").strip().splitlines()
    assert [line.split(" |")[0] for line in lines[-4:]] == [
        "| Random subset", "| Lowest score", "| Class entropy", "| Core-set (k-center)"]
