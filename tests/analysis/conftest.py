"""A small hand-made sweep folder written with `analysis.schema`: every table value is
computable by hand (two seeds per cell, values 10 apart → std (ddof=1) 7.1)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from analysis.schema import PARTITIONS, to_table

CONFIG = """\
name: fixture
profile: local
train:
  iou_schedule: freeze
loss:
  iou_target: sqrt
study:
  n_init: 4
  N:
  - 40
  - 80
  beta:
  - 0.3
  - 0.6
  seed:
  - 0
  - 1
  modes:
  - predicted
  - oracle
  random_baseline: true
"""


def trial_rows() -> list[dict]:
    def row(mode, beta, n, seed, ap, seg=None, budget=None, seg_budget=None, frac=None,
            mae=0.2, status="COMPLETED", **kw):
        b = "none" if beta is None else f"{beta:.2f}"
        f = "" if frac is None else f"-f{frac:g}"
        return dict(trial=f"{mode}-b{b}-N{n}-s{seed}{f}", N=n, beta=beta, seed=seed,
                    mode=mode, n_init=4, status=status, ap50=ap, mae=mae, seg_ap50=seg,
                    budget_days=budget, seg_budget_days=seg_budget, pool_fraction=frac,
                    iou_schedule="freeze", iou_target="sqrt", **kw)

    return [
        # random: AP 15.0 ± 7.1 / 35.0 ± 7.1; segmentation 35.0 / 55.0; MAE 25.0 / 15.0
        row("random", None, 40, 0, 0.10, 0.30, 0.50, 2.00, mae=0.20),
        row("random", None, 40, 1, 0.20, 0.40, 0.50, 2.00, mae=0.30),
        row("random", None, 80, 0, 0.30, 0.50, 1.00, 3.00, mae=0.10),
        row("random", None, 80, 1, 0.40, 0.60, 1.00, 3.00, mae=0.20),
        # β = 0.3: N=40 30.0 ± 7.1 with segmentation 50.0 ± 7.1; N=80 one failed seed
        row("predicted", 0.3, 40, 0, 0.25, 0.45, 0.75, 2.25),
        row("predicted", 0.3, 40, 1, 0.35, 0.55, 0.75, 2.25),
        row("predicted", 0.3, 80, 0, 0.20, None, 1.25),
        row("predicted", 0.3, 80, 1, math.nan, status="FAILED", error="StageFailed: boom",
            log_path="/logs/annotate-x"),
        # β = 0.6: N=40 10.0 ± 7.1 (no segmentation); N=80 55.0 ± 7.1, segmentation 75.0
        row("predicted", 0.6, 40, 0, 0.05, None, 0.75),
        row("predicted", 0.6, 40, 1, 0.15, None, 0.75),
        row("predicted", 0.6, 80, 0, 0.50, 0.70, 1.25, 3.25),
        row("predicted", 0.6, 80, 1, 0.60, 0.80, 1.25, 3.25),
        # half of the additional pool (Tables 7/8), N=40 only
        row("random", None, 40, 0, 0.10, 0.20, 0.50, 1.50, frac=0.5),
        row("random", None, 40, 1, 0.20, 0.30, 0.50, 1.50, frac=0.5),
        row("predicted", 0.3, 40, 0, 0.25, 0.35, 0.75, 1.75, frac=0.5),
        row("predicted", 0.3, 40, 1, 0.35, 0.45, 0.75, 1.75, frac=0.5),
    ]


def _write(root: Path, table: str, key: str, rows: list[dict]) -> None:
    part = PARTITIONS[table]
    folder = root / "results" / table
    if part is not None:
        folder = folder / f"{part}={rows[0][part]}"
    folder.mkdir(parents=True, exist_ok=True)
    data = to_table(table, rows)
    if part is not None:
        data = data.drop_columns([part])
    pq.write_table(data, folder / f"{key}.parquet")


def write_sweep(root: Path) -> Path:
    rows = trial_rows()
    for r in rows:
        _write(root, "trials", r["trial"], [r])
    # pool of 20 images per seed: image i has 1 + i % 4 objects, area (i + 1) / 100
    rng = np.random.default_rng(0)
    scores = [dict(image_id=i, seed=s, score_pred=float(rng.uniform()), iou_true=i / 20,
                   n_objects=1 + i % 4, mean_object_area=(i + 1) / 100, in_init=i < 4)
              for s in (0, 1) for i in range(20)]
    init = root / "stages" / "init-abc"
    init.mkdir(parents=True)
    pq.write_table(to_table("image_scores", scores), init / "image_scores.parquet")
    (init / "DONE").write_text("")
    for r in rows:
        if r["status"] != "COMPLETED":
            continue
        start = 4 if r["beta"] is None else int(r["beta"] * 20)
        ids = [4 + (start + k) % 16 for k in range(r["N"] // 10)]
        _write(root, "selections", r["trial"], [
            dict(trial=r["trial"], image_id=i, rank=k, mode=r["mode"])
            for k, i in enumerate(ids)])
    (root / "config.yaml").write_text(CONFIG)
    (root / "sweep.json").write_text(json.dumps(
        {"name": "fixture", "command": "basis sweep configs/fixture.yaml",
         "started": "2026-01-01T00:00:00"}))
    return root


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    return write_sweep(tmp_path / "sweep")
