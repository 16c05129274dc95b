"""The acquisition baselines of ``study.strategies`` through a real tiny sweep: Ray Tune →
submitit (local) → score stage (uncertainties, pooled features) → selection → Parquet →
``basis tables``."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests.jobs.test_sweep_e2e import basis

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "sweep_baselines.yaml"
STRATEGIES = ("lowest", "entropy", "coreset")
UNCERTAINTY_COLUMNS = ("entropy", "least_confidence", "mask_entropy")


@pytest.mark.slow
def test_baseline_strategies_run_as_modes_and_get_their_table_rows(tmp_path):
    from analysis.io import read, read_optional

    sweep = tmp_path / "sweep"
    basis("sweep", str(CONFIG), "--sweep-dir", str(sweep), timeout=600)
    trials = read(sweep, "trials")
    assert sorted(trials["mode"]) == sorted(STRATEGIES)
    assert set(trials["status"]) == {"COMPLETED"}, trials[["trial", "error"]].to_string()
    assert set(trials["trial"]) == {f"{m}-bnone-N20-s0" for m in STRATEGIES}   # β-free
    assert trials["beta"].isna().all()
    assert all(math.isfinite(a) for a in trials["ap50"])
    # charged the pool's IL+C labels like predicted (IoU-W-RSIS runs on the pool)
    assert trials["budget_s"].nunique() == 1 and trials["budget_s"].iloc[0] > 0

    scores = read_optional(sweep, "image_scores")     # results/, else the score stage's
    (score_dir,) = [p.parent for p in (sweep / "stages").glob("score-*/DONE")]
    assert scores is not None and len(scores) == 48
    for col in UNCERTAINTY_COLUMNS:
        assert scores[col].notna().all() and np.isfinite(scores[col]).all(), col
    assert (scores["entropy"] <= math.log(4) + 1e-6).all()
    with np.load(score_dir / "features.npz") as npz:
        assert npz["features"].shape == (48, 512)
        assert sorted(npz["image_id"]) == sorted(scores["image_id"])

    init = set(scores.loc[scores["in_init"], "image_id"])
    assert len(init) == 12
    selections = read(sweep, "selections")
    for mode in STRATEGIES:
        ids = selections.loc[selections["mode"] == mode, "image_id"].tolist()
        assert len(ids) == len(set(ids)) == 20 - 12 and not init & set(ids), mode
    pool = scores[~scores["in_init"]]
    most_uncertain = set(pool.nlargest(8, "entropy")["image_id"])
    assert set(selections.loc[selections["mode"] == "entropy", "image_id"]) == most_uncertain

    text = basis("tables", str(sweep)).stdout
    for label in ("Lowest score", "Class entropy", "Core-set (k-center)"):
        assert sum(line.startswith(f"| {label} |") for line in text.splitlines()) == 1, text
    assert "| 20 |" in text
