"""Golden tests: every paper table from the hand-made fixture (tests/analysis/conftest.py)."""
import pandas as pd
import pytest

from analysis import tables
from analysis.tables import render

STD = "± 7.1"  # two seeds 10 apart: sample std (ddof=1) 7.07; ddof=0 would give 5.0


def body(text: str) -> list[str]:
    return [line for line in text.strip().splitlines() if line.startswith("|")]


def test_table4_golden(sweep):
    text = render(sweep, table=4)
    assert body(text) == [
        "| | 40 | 80 |",
        "|---|---|---|",
        f"| Random subset | 15.0 {STD} | 35.0 {STD} |",
        f"| β = 0.3 | **30.0 {STD}** | 20.0 (1/2) |",
        f"| β = 0.6 | 10.0 {STD} | **55.0 {STD}** |",
    ]
    assert "mean ± std (ddof=1) over seeds 0, 1" in text
    assert "1 failed trial(s)" in text
    # the half-pool trials repeat the annotation stage: not counted twice
    assert render(sweep, mode="predicted") == text


def test_table3_absent_says_so(sweep):
    assert render(sweep, table=3) == "Table 3 — oracle IoU: no oracle trials in this sweep.\n"


def test_table2_from_fixture(sweep):
    assert body(render(sweep, table=2)) == [
        "| IoU branch | 40 | 80 |", "|---|---|---|",
        f"| freeze + sqrt | **25.0 {STD}** | **15.0 {STD}** |"]


def test_table2_schedules_golden():
    rows = []
    for sched, target, n40, n80 in [("joint", "identity", (0.4, 0.5), (0.3, 0.4)),
                                    ("freeze", "identity", (0.3, 0.4), (0.1, None)),
                                    ("freeze", "sqrt", (0.2, 0.3), (0.2, 0.3))]:
        for n, vals in ((40, n40), (80, n80)):
            for seed, v in enumerate(vals):
                rows.append(dict(N=n, beta=None, seed=seed, mode="random",
                                 status="COMPLETED" if v is not None else "FAILED",
                                 mae=v, iou_schedule=sched, iou_target=target))
    t = tables.mae(pd.DataFrame(rows))
    assert body(tables.to_markdown(t)) == [
        "| IoU branch | 40 | 80 |", "|---|---|---|",
        f"| joint | 45.0 {STD} | 35.0 {STD} |",
        f"| freeze | 35.0 {STD} | **10.0 (1/2)** |",
        f"| freeze + sqrt | **25.0 {STD}** | 25.0 {STD} |"]
    assert "lowest per column in bold" in t.note


def test_table5_golden(sweep):
    text = render(sweep, table=5)
    assert body(text) == [
        "| Selection | Annotation network |  | Segmentation network |  |",
        "|---|---|---|---|---|",
        "| | 40 | 80 | 40 | 80 |",
        f"| Random (W-RSIS) | 15.0 {STD} | 35.0 {STD} | 35.0 {STD} | 55.0 {STD} |",
        f"| Mask-guided (IoU-W-RSIS) | **30.0 {STD}** | **55.0 {STD}** | **50.0 {STD}** "
        f"| **75.0 {STD}** |"]
    assert "(N=40: β=0.3, N=80: β=0.6)" in text


def test_table5_shows_the_strong_only_control_when_the_sweep_ran_it(sweep):
    import pyarrow.parquet as pq

    from analysis.schema import to_table

    # give the pool-fraction-1 segmenting trials a control AP: the annotation AP − 0.05
    for path in (sweep / "results" / "trials").rglob("*.parquet"):
        row = pq.read_table(path).to_pylist()[0]
        if row["seg_ap50"] is not None and row["pool_fraction"] is None:
            row["ctl_ap50"] = row["ap50"] - 0.05
            row["mode"] = path.parent.name.split("=")[1]
            pq.write_table(to_table("trials", [row]).drop_columns(["mode"]), path)
    text = render(sweep, table=5)
    assert body(text)[0] == ("| Selection | Annotation network |  | Segmentation network |  "
                             "| Strong-only RSIS |  |")
    assert body(text)[3] == (f"| Random (W-RSIS) | 15.0 {STD} | 35.0 {STD} | 35.0 {STD} "
                             f"| 55.0 {STD} | 10.0 {STD} | 30.0 {STD} |")
    assert "strong-only RSIS = " in text
    assert "Strong-only" not in render(sweep, table=6)     # no cost of its own


def test_table6_golden(sweep):
    assert body(render(sweep, table=6))[2:] == [
        "| | 40 | 80 | 40 | 80 |",
        "| Random (W-RSIS) | 0.50 | 1.00 | 2.00 | 3.00 |",
        "| Mask-guided (IoU-W-RSIS) | 0.75 | 1.25 | 2.25 | 3.25 |"]


def test_tables7_8_golden(sweep):
    assert body(render(sweep, table=7))[2:] == [
        "| | 40 | 40 |",
        f"| Random (W-RSIS) | 15.0 {STD} | 25.0 {STD} |",
        f"| Mask-guided (IoU-W-RSIS) | **30.0 {STD}** | **40.0 {STD}** |"]
    assert "pool_fraction 0.5" in render(sweep, table=7)
    assert body(render(sweep, table=8))[3:] == [
        "| Random (W-RSIS) | 0.50 | 1.50 |", "| Mask-guided (IoU-W-RSIS) | 0.75 | 1.75 |"]


def test_latex_golden(sweep):
    lines = render(sweep, table=4, form="latex").splitlines()
    assert lines[:10] == [
        "\\begin{table}[t]", "\\centering", "\\begin{tabular}{lcc}", "\\toprule",
        " & 40 & 80 \\\\", "\\midrule",
        "Random subset & 15.0 $\\pm$ 7.1 & 35.0 $\\pm$ 7.1 \\\\",
        "$\\beta$ = 0.3 & \\textbf{30.0 $\\pm$ 7.1} & 20.0 (1/2) \\\\",
        "$\\beta$ = 0.6 & 10.0 $\\pm$ 7.1 & \\textbf{55.0 $\\pm$ 7.1} \\\\",
        "\\bottomrule"]
    grouped = render(sweep, table=5, form="latex")
    assert ("Selection & \\multicolumn{2}{c}{Annotation network} & "
            "\\multicolumn{2}{c}{Segmentation network} \\\\") in grouped
    assert "\\cmidrule(lr){2-3}\\cmidrule(lr){4-5}" in grouped


def test_csv_golden(sweep):
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(render(sweep, table=4, form="csv"))))
    assert len(rows) == 6
    cell = rows[3]
    assert (cell["row"], cell["N"], cell["mean"], cell["std"], cell["n_seeds"],
            cell["n_expected"], cell["best"]) == ("β = 0.3", "80", "20.0", "", "1", "2", "0")
    assert float(rows[2]["std"]) == pytest.approx(7.0710678, abs=1e-6)
    assert render(sweep, table=3, form="csv").startswith("# Table 3")


def test_absent_tables_are_one_line(tmp_path):
    from tests.analysis.conftest import _write

    _write(tmp_path, "trials", "r", [dict(trial="r", N=40, beta=None, seed=0, mode="random",
                                          status="COMPLETED", ap50=0.1)])
    for n in (2, 3, 4, 5, 7, 8):
        out = render(tmp_path, table=n)
        assert len(out.strip().splitlines()) == 1, (n, out)
    with pytest.raises(ValueError, match="no Table 9"):
        tables.build(pd.DataFrame({"status": []}), 9)


def test_table2_schedule_trials_stay_out_of_tables_3_to_8(sweep):
    """The random trials a sweep runs under other IoU-branch settings (study.schedules,
    ``variant`` set) give Table 2 its rows and change no other table."""
    from tests.analysis.conftest import _write

    before = {n: render(sweep, table=n) for n in (4, 5, 6, 7, 8)}
    for sched, target, mae in (("joint", "identity", 0.40), ("freeze", "identity", 0.30)):
        for n in (40, 80):
            for seed in (0, 1):
                key = f"random-bnone-N{n}-s{seed}-{sched}+{target}"
                _write(sweep, "trials", key, [dict(
                    trial=key, N=n, beta=None, seed=seed, mode="random", n_init=4,
                    status="COMPLETED", ap50=0.99, mae=mae + seed * 0.1, seg_ap50=None,
                    pool_fraction=None, iou_schedule=sched, iou_target=target,
                    variant=f"{sched}+{target}")])
    assert {n: render(sweep, table=n) for n in (4, 5, 6, 7, 8)} == before
    assert body(render(sweep, table=2)) == [
        "| IoU branch | 40 | 80 |", "|---|---|---|",
        f"| joint | 45.0 {STD} | 45.0 {STD} |",
        f"| freeze | 35.0 {STD} | 35.0 {STD} |",
        f"| freeze + sqrt | **25.0 {STD}** | **15.0 {STD}** |"]
