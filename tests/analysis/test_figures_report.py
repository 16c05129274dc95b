"""Figures and the report from the hand-made fixture; analysis without the cluster side."""
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.image import imread, imsave

from analysis import figures
from analysis.io import read, read_optional
from analysis.report import build, versions

ROOT = Path(__file__).resolve().parents[2]


def png_size(path: Path) -> tuple[int, int]:
    img = imread(path)  # raises on a file that is not a valid PNG
    return img.shape[1], img.shape[0]


def test_figures_render_at_their_size(sweep, tmp_path):
    trials = read(sweep, "trials")
    sel = read(sweep, "selections")
    scores = read_optional(sweep, "image_scores")  # from stages/init-*/image_scores.parquet
    assert scores is not None and len(scores) == 40
    png, pdf = figures.ap_vs_beta(trials, tmp_path / "a")
    assert png_size(png) == figures.SIZES["ap_vs_beta"]
    assert pdf.read_bytes()[:5] == b"%PDF-"
    png, pdf = figures.subsets(trials, sel, scores, tmp_path / "b")
    assert png_size(png) == figures.SIZES["subsets"]
    assert pdf.read_bytes()[:5] == b"%PDF-"
    from analysis import paired

    png, pdf = figures.delta_vs_beta(paired.summary(paired.differences(trials)),
                                     tmp_path / "d")
    assert png_size(png) == figures.SIZES["delta_vs_beta"]
    assert pdf.read_bytes()[:5] == b"%PDF-"
    # the Fig. 5 join: each selected image carries its pool statistics
    joined = figures.selected_subsets(trials, sel, scores)
    assert len(joined) == len(sel) and joined["n_objects"].notna().all()


def test_image_grid_only_with_image_files(sweep, tmp_path):
    trials, sel = read(sweep, "trials"), read(sweep, "selections")
    assert figures.image_files(sweep) == {}
    assert figures.image_grid(trials, sel, {}, tmp_path / "g") is None
    (sweep / "images").mkdir()
    for i in range(20):
        imsave(sweep / "images" / f"{i}.png", [[[i / 20, 0.5, 0.5]] * 8] * 8)
    png, _ = figures.image_grid(trials, sel, figures.image_files(sweep), tmp_path / "g",
                                per_row=3)
    assert png_size(png) == (150 * 3 + 60, 150 * 2 + 40)  # two β rows


def test_report(sweep):
    rep = build(sweep)
    md = rep.md.read_text()
    for needle in ("### Table 4", "### Table 5", "Table 3 — oracle IoU: no oracle trials",
                   "![", "figures/ap_vs_beta.png", "figures/subsets.png",
                   "Fig. 6 (selected images per β) skipped",
                   "predicted-b0.30-N80-s1: StageFailed: boom — log: /logs/annotate-x",
                   "predicted β=0.3 N=80: 1/2 seeds", "oracle β=0.6 N=80",
                   "basis sweep configs/fixture.yaml", "iou_target: sqrt", "| pyarrow |",
                   "| torch |", "### Paired — selection vs random, annotation network",
                   "+15.0 [+15.0, +15.0] (2/2 > 0)", "figures/delta_vs_beta.png"):
        assert needle in md, needle
    page = rep.html.read_text()
    assert '<img src="figures/ap_vs_beta.png"' in page and "<table>" in page
    assert all(p.exists() for p in rep.figures)
    assert (sweep / "report" / "tables" / "table5.tex").exists()
    assert (sweep / "report" / "tables" / "paired.csv").exists()
    assert (sweep / "report" / "tables" / "paired5.md").exists()
    assert not (sweep / "report" / "tables" / "table3.md").exists()  # absent: no file


def test_report_of_a_sweep_with_no_trials_yet(tmp_path):
    (tmp_path / "results" / "trials").mkdir(parents=True)
    rep = build(tmp_path, tmp_path / "out")
    assert "No trials recorded yet" in rep.md.read_text()


def test_versions_without_importing():
    v = versions()
    assert v["python"].count(".") == 2 and "torch" in v and "mlflow" in v


# A finder that refuses the cluster side's packages, as if they were not installed (not
# None in sys.modules: SciPy reads a name there as an imported module).
BLOCK = ("import sys\n"
         "class _Halt:\n"
         "    def find_spec(self, name, path=None, target=None):\n"
         "        if name.split('.')[0] in ('torch', 'torchvision', 'ray', 'submitit', "
         "'mlflow'):\n"
         "            raise ModuleNotFoundError(f'import of {name} halted')\n"
         "sys.meta_path.insert(0, _Halt())\n")


def test_analysis_imports_without_the_cluster_side(sweep):
    code = BLOCK + (
        "import analysis.report, analysis.tables, analysis.figures, analysis.paired\n"
        f"assert 'Random subset' in analysis.tables.render({str(sweep)!r}, table=4)\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'ray', 'submitit', 'mlflow') and sys.modules[m] is not None]\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_block_shim_works():
    out = subprocess.run([sys.executable, "-c", BLOCK + "import torch"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0 and "import of torch halted" in out.stderr


@pytest.mark.parametrize("argv,needle", [
    (["tables", "{s}", "--table", "5"], "| Random (W-RSIS) |"),
    (["tables", "{s}", "--table", "4", "--format", "latex"], "\\begin{tabular}"),
    (["tables", "{s}", "--format", "csv"], "table,row,group"),
    (["tables", "{s}", "--mode", "oracle"], "no oracle trials"),
    (["report", "{s}", "--out", "{s}/r"], "report.md"),
])
def test_cli(sweep, capsys, argv, needle):
    from jobs.cli import main

    assert main([a.format(s=sweep) for a in argv]) == 0
    assert needle in capsys.readouterr().out
