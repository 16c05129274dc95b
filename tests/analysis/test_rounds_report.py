"""The rounds table (AP vs annotation days per selection round and strategy), its figure
and their place in the report, from hand-made ``rounds`` rows."""
from __future__ import annotations

import pytest

from analysis import figures, tables
from analysis.io import read, read_optional
from analysis.report import build
from tests.analysis.conftest import _write
from tests.analysis.test_figures_report import png_size


def round_rows() -> list[dict]:
    """Two rounds of random and predicted β = 0.3 at N = 40 (n_init 4: 22 then 40 images),
    two seeds whose AP differs by 0.1 (std 7.1 ×100); seed 1 of predicted failed in round 2."""
    out = []
    for mode, beta, base in (("random", None, 0.10), ("predicted", 0.3, 0.20)):
        b = "none" if beta is None else f"{beta:.2f}"
        for seed in (0, 1):
            failed = mode == "predicted" and seed == 1
            for r, (n, days) in enumerate(((22, 0.30), (40, 0.50)), start=1):
                if failed and r == 2:
                    continue
                out.append(dict(trial=f"{mode}-b{b}-N40-s{seed}", mode=mode, N=40, beta=beta,
                                seed=seed, n_init=4, round=r, rounds=2, n_selected=18,
                                n_labelled=n, ap50=base + 0.1 * r + 0.1 * seed,
                                budget_days=days + (0.1 if mode == "predicted" else 0.0),
                                status="FAILED" if failed else "COMPLETED"))
    return out


@pytest.fixture
def rounds_sweep(sweep):
    rows = round_rows()
    for key in sorted({r["trial"] for r in rows}):
        _write(sweep, "rounds", key, [r for r in rows if r["trial"] == key])
    return sweep


def test_rounds_table_has_a_row_per_round_and_strategy(rounds_sweep):
    t = tables.rounds_table(read(rounds_sweep, "rounds"))
    assert t.absent is None and t.columns == ["40"] * 3
    assert t.groups == [("Images labelled", 1), ("Annotation days", 1), ("AP@0.5 ×100", 1)]
    labels = [label for label, _ in t.rows]
    assert labels == ["Random subset, round 1", "Random subset, round 2",
                      "Predicted IoU, β = 0.3, round 1", "Predicted IoU, β = 0.3, round 2"]
    cells = {label: [c.text for c in row] for label, row in t.rows}
    assert cells["Random subset, round 1"] == ["22", "0.30", "25.0 ± 7.1"]
    assert cells["Random subset, round 2"] == ["40", "0.50", "35.0 ± 7.1"]
    # the failed trial is left out of both its rounds: one of two seeds, marked
    assert cells["Predicted IoU, β = 0.3, round 1"] == ["22", "0.40", "30.0 (1/2)"]
    assert "1 failed trial(s) left out" in t.note
    best = {label: [c.best for c in row] for label, row in t.rows}
    assert [b[2] for b in best.values()] == [False, False, True, True]   # per round


def test_rounds_table_renders_in_every_format(rounds_sweep, capsys):
    from jobs.cli import main

    md = tables.render(rounds_sweep, table="rounds")
    assert "| Random subset, round 2 | 40 | 0.50 | 35.0 ± 7.1 |" in md
    assert "| Predicted IoU, β = 0.3, round 2 | 40 | 0.60 | **40.0 (1/2)** |" in md
    assert "| Selection, round | Images labelled | Annotation days | AP@0.5 ×100 |" in md
    latex = tables.render(rounds_sweep, table="rounds", form="latex")
    assert "\\multicolumn{1}{c}{AP@0.5 $\\times$100}" in latex and "tab:tablerounds" in latex
    csv = tables.render(rounds_sweep, table="rounds", form="csv").splitlines()
    assert len(csv) == 1 + 4 * 3
    assert csv[-1] == 'rounds,"Predicted IoU, β = 0.3, round 2",AP@0.5 ×100,40,40.0,,1,2,1,' \
        '40.0 (1/2)'
    assert main(["tables", str(rounds_sweep), "--table", "rounds", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == csv
    assert main(["tables", str(rounds_sweep), "--table", "4"]) == 0   # numbers still parse


def test_a_sweep_without_rounds_says_so(sweep):
    assert read_optional(sweep, "rounds") is None
    assert tables.render(sweep, table="rounds").startswith("Rounds: no rounds recorded")
    md = build(sweep).md.read_text()
    assert "Rounds: no rounds recorded" in md and "AP vs annotation days skipped" in md


def test_ap_vs_days_figure_and_the_report(rounds_sweep, tmp_path):
    png, pdf = figures.ap_vs_days(read(rounds_sweep, "rounds"), tmp_path / "d")
    assert png_size(png) == figures.SIZES["ap_vs_days"]
    assert pdf.read_bytes()[:5] == b"%PDF-"
    rep = build(rounds_sweep)
    md = rep.md.read_text()
    assert f"### {tables.ROUNDS_TITLE}" in md and "figures/ap_vs_days.png" in md
    assert (rep.md.parent / "figures" / "ap_vs_days.png").exists()
    for ext in ("md", "tex", "csv"):
        assert (rep.md.parent / "tables" / f"rounds.{ext}").exists()
    assert rep.tables["rounds"].rows and "ap_vs_days" in rep.html.read_text()
