"""`basis plan`: the budget planner on the command line, with and without a sweep."""
from __future__ import annotations

from jobs import records
from jobs.cli import main


def _trial(mode: str, N: int, seed: int, ap: float, beta: float | None = None, **extra) -> dict:
    key = f"{mode}-{beta}-{N}-{seed}"
    return {"trial": key, "N": N, "beta": beta, "seed": seed, "mode": mode, "n_init": 100,
            "status": "COMPLETED", "ap50": ap, **extra}


def _write(sweep, rows) -> None:
    for row in rows:
        records.write(sweep, "trials", row["trial"], [row])


def test_plan_without_a_sweep_lists_what_fits(capsys):
    assert main(["-q", "plan", "--days", "1.2", "--N", "200", "400", "--additional", "0"]) == 0
    out = capsys.readouterr().out
    assert "| 1.11 | 400 | random | 0 (0%) | annotation | 400 | 0 | – | – | – |" in out
    assert "| 0.88 | 200 | closest |" in out
    assert "| 1.38 | 400 | closest" not in out
    assert "1 configuration(s) over budget; the cheapest needs 1.38 days: N=400 closest" in out


def test_plan_default_fractions_with_the_additional_pool(capsys):
    assert main(["-q", "plan", "--days", "2.3", "--N", "400"]) == 0
    out = capsys.readouterr().out
    assert "| 2.28 | 400 | random | 4559 (50%) | segmentation | 400 | 4559 |" in out
    assert "3.45" not in out.split("over budget")[0]


def test_plan_joins_a_sweep(tmp_path, capsys):
    _write(tmp_path, [
        _trial("random", 400, 0, 0.40), _trial("random", 400, 1, 0.50),
        _trial("predicted", 400, 0, 0.50, 0.3), _trial("predicted", 400, 1, 0.60, 0.3),
        _trial("predicted", 400, 0, 0.45, 0.7),
        _trial("predicted", 200, 0, 0.30, 0.5, seg_ap50=0.52, pool_fraction=0.5),
        {**_trial("random", 200, 0, 0.2), "status": "FAILED", "ap50": None, "error": "boom"},
    ])
    assert main(["-q", "plan", "--days", "1.4", "--N", "200", "400", "--fractions", "0",
                 "--sweep", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| 1.11 | 400 | random | 0 (0%) | annotation | 400 | 0 | 45.0 | – | 2 |" in out
    assert "| 1.38 | 400 | closest | 0 (0%) | annotation | 400 | 1064 | 55.0 | 0.3 | 2 |" in out
    assert "| 0.55 | 200 | random | 0 (0%) | annotation | 200 | 0 | – | – | – |" in out
    assert "Best expected AP@0.5 within budget: 55.0 % — N=400 closest" in out
    # the segmentation network at 50 % of the additional pool
    assert main(["-q", "plan", "--days", "3", "--N", "200", "--fractions", "0.5",
                 "--sweep", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| 2.05 | 200 | closest | 4559 (50%) | segmentation | 200 | 5823 | 52.0 | 0.5 | 1 |" \
        in out


def test_plan_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["plan", "--days", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("basis: error: days must be") and len(err.strip().splitlines()) == 1
    assert main(["plan", "--days", "2", "--selection", "nearest"]) == 2
    assert "selection must be one of" in capsys.readouterr().err
    assert main(["plan", "--days", "2", "--sweep", str(tmp_path)]) == 2
    assert "no trials results" in capsys.readouterr().err
