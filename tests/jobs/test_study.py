"""The synthetic study config (issue 8) at smoke size: every experiment it holds runs
through the real sweep, the report has every table, and a second run from scratch
gives the same numbers (same seeds → same results on CPU)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.jobs.test_sweep_e2e import basis

STUDY = Path(__file__).resolve().parents[2] / "configs" / "synthetic" / "study.yaml"


def smoke_config(tmp_path: Path) -> Path:
    """The study's structure (both modes, segmentation, Table-2 schedules) at tiny size."""
    raw = yaml.safe_load(STUDY.read_text())
    raw["name"] = "study-smoke"
    raw["profile"] = "local"
    raw["data"].update(n_pool=24, n_test=8, n_additional=8)
    raw["data"]["synthetic"].update(image_size=32, n_classes=3)
    raw["model"].update(hidden=16, max_steps=3)
    raw["train"].update(epochs=1, iou_epochs=1, steps=None)
    if "pretrain" in raw:
        raw["pretrain"].update(n_images=16, epochs=1)
    raw["study"].update(n_init=8, N=[12], seed=[0])
    path = tmp_path / "study-smoke.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
def test_study_config_at_smoke_size_reproduces_its_tables(tmp_path):
    import pandas as pd

    from analysis.io import read

    config = smoke_config(tmp_path)
    runs = []
    for name in ("a", "b"):
        basis("sweep", str(config), "--sweep-dir", str(tmp_path / name))
        trials = read(tmp_path / name, "trials").sort_values("trial").reset_index(drop=True)
        runs.append(trials)
    a, b = runs
    raw = yaml.safe_load(STUDY.read_text())
    s = raw["study"]
    n_arms = (1 + len(s["modes"]) * len(s["beta"]) + len(s["schedules"]))
    assert len(a) == n_arms and set(a["status"]) == {"COMPLETED"}, a[["trial", "error"]]
    assert set(a["variant"].dropna()) == {"joint+identity", "freeze+identity"}
    assert a["seg_ap50"].notna().sum() == 2          # random and predicted β = 0.5
    cols = ["trial", "ap50", "mae", "seg_ap50", "budget_days", "iou_schedule", "iou_target"]
    pd.testing.assert_frame_equal(a[cols], b[cols])   # exactly: same seeds, same numbers

    basis("report", str(tmp_path / "a"), "--out", str(tmp_path / "report"))
    tables = {p.name for p in (tmp_path / "report" / "tables").glob("*.md")}
    assert {"table2.md", "table3.md", "table4.md", "table5.md", "table6.md"} <= tables
    t2 = (tmp_path / "report" / "tables" / "table2.md").read_text()
    assert "| joint |" in t2 and "| freeze |" in t2 and "| freeze + sqrt |" in t2
    for n in (2, 3, 4, 5):
        one = basis("tables", str(tmp_path / "a"), "--table", str(n)).stdout
        assert one == basis("tables", str(tmp_path / "b"), "--table", str(n)).stdout

    # the paired table: each selection arm minus the random arm of its seed and N, by hand
    from analysis import paired

    main = a[a["variant"].isna() | (a["variant"] == "")]
    rnd = main[main["mode"] == "random"].set_index(["N", "seed"])["ap50"]
    arms = main[main["mode"] != "random"]
    by_hand = {(m, b, n): ap - rnd.loc[(n, s)]
               for m, b, n, s, ap in zip(arms["mode"], arms["beta"], arms["N"], arms["seed"],
                                         arms["ap50"])}
    summ = paired.summary(paired.differences(a))
    assert len(summ) == len(by_hand) and (summ["n"] == 1).all()
    for _, row in summ.iterrows():
        assert row["mean"] == pytest.approx(by_hand[(row["mode"], row["beta"], row["N"])])
    text = basis("tables", str(tmp_path / "a"), "--paired").stdout
    for (mode, beta, n), diff in by_hand.items():
        line = [x for x in text.splitlines() if x.startswith(f"| {mode}, β = {beta:.1f} |")]
        assert line and f"{100 * diff:+.1f} ({int(diff > 0)}/1 > 0)" in line[0], text
