"""`basis regime`: the initial network's regime from the init and score stages only."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from analysis.schema import to_table
from jobs import dag
from jobs.regime import TARGETS, Target, markdown, seed_metrics, summary
from jobs.specs import StageFolder


def _stage(tmp_path: Path, true: np.ndarray, pred: np.ndarray, ap: float):
    folder = StageFolder(tmp_path / f"score-{ap}")
    folder.path.mkdir()
    rows = [{"image_id": i, "seed": 0, "score_pred": float(p), "iou_true": float(t),
             "n_objects": 1, "mean_object_area": 0.1, "in_init": i < 3}
            for i, (t, p) in enumerate(zip(true, pred))]
    pq.write_table(to_table("image_scores", rows), folder.image_scores)
    init = dag.StageResult(None, StageFolder(tmp_path / "init-x"), {"ap50": ap})
    return init, dag.StageResult(None, folder, {})


def test_metrics_are_those_of_the_pool_outside_the_initial_images(tmp_path):
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 1, 50)
    pred = np.clip(true + rng.normal(0, 0.1, 50), 0, 1)
    true[:3] = pred[:3] = 99.0           # the initial images: never part of the regime
    m = seed_metrics(*_stage(tmp_path, true, pred, 0.2), seed=0)
    t, p = true[3:], pred[3:]
    assert m["n_pool"] == 47 and m["init_ap50"] == pytest.approx(20.0)
    assert m["pool_iou_mean"] == pytest.approx(t.mean())
    assert m["pool_iou_std"] == pytest.approx(t.std(ddof=1))
    assert m["pearson_r"] == pytest.approx(np.corrcoef(p, t)[0, 1])
    assert m["mae"] == pytest.approx(np.abs(p - t).mean())
    assert m["mae_mean_predictor"] == pytest.approx(np.abs(t - t.mean()).mean())
    assert m["mae_ratio"] < 0.8          # a good predictor beats the pool's mean


def test_summary_checks_every_target_on_every_seed():
    good = {"seed": 0, "init_ap50": 20.0, "pool_iou_mean": 0.4, "pool_iou_std": 0.2,
            "score_mean": 0.4, "score_std": 0.2, "pearson_r": 0.7, "mae": 0.1,
            "mae_mean_predictor": 0.2, "mae_ratio": 0.5}
    bad = {**good, "seed": 1, "pearson_r": 0.3}
    s = summary([good, good | {"seed": 2}])
    assert s["meets_all"] and s["seeds"] == [0, 2]
    s = summary([good, bad])
    assert not s["meets_all"]
    assert s["targets"]["pearson_r"] == {"target": "≥ 0.5", "mean_meets": True,
                                         "every_seed_meets": False}
    assert s["pearson_r"] == pytest.approx(0.5)
    assert set(s["targets"]) == set(TARGETS)
    assert not Target(0.5, None).holds(float("nan"))
    table = markdown([good, bad, s]).splitlines()
    assert table[2].startswith("| 0 | 20.0 | 0.400 | 0.200 |") and table[-2].startswith("| mean")
    assert "≥ 0.5 ✗" in table[-1] and "in [15, 35] ✓" in table[-1]


@pytest.mark.slow
def test_regime_then_sweep_reuses_its_stages(tmp_path):
    from tests.jobs.test_sweep_e2e import HERE, basis

    sweep = tmp_path / "sweep"
    out = basis("regime", str(HERE / "sweep_tiny.yaml"), "--sweep-dir", str(sweep))
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [r.get("seed") for r in lines[:-1]] == [0] and lines[-1]["summary"]
    assert set(lines[0]) >= {"init_ap50", "pool_iou_mean", "pool_iou_std", "score_mean",
                             "score_std", "pearson_r", "mae", "mae_mean_predictor"}
    assert not lines[0]["reused"]
    assert not (sweep / "results").exists()          # no arm was run
    assert not (sweep / "mlflow.db").exists()        # nor an MLflow experiment made
    again = basis("regime", str(HERE / "sweep_tiny.yaml"), "--sweep-dir", str(sweep))
    rerun = [json.loads(line) for line in again.stdout.splitlines() if line.startswith("{")]
    assert rerun[0]["reused"] and rerun[0]["init_stage"] == lines[0]["init_stage"]
    basis("sweep", str(HERE / "sweep_tiny.yaml"), "--sweep-dir", str(sweep))
    for kind in ("init", "score"):
        folders = [p for p in (sweep / "stages").glob(f"{kind}-*") if p.is_dir()]
        assert [p.name for p in folders] == [lines[0][f"{kind}_stage"]]
        assert len(dag.submissions(StageFolder(folders[0]))) == 1   # computed once
    assert len((sweep / "regime.jsonl").read_text().splitlines()) == 4
    assert (sweep / "mlflow.db").exists()            # the sweep made it


def test_regime_runs_without_ray_and_mlflow(tmp_path):
    """As on a GPU machine that has torch but neither Ray nor MLflow: every Python
    process of the run (the CLI and its stage jobs) refuses to import them."""
    from tests.jobs.test_sweep_e2e import HERE, basis

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Halt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('ray', 'mlflow'):\n"
        "            raise ModuleNotFoundError(f'import of {name} halted')\n"
        "sys.meta_path.insert(0, _Halt())\n")
    import os

    root = str(HERE.parent.parent)
    env = {"PYTHONPATH": os.pathsep.join([str(site), root])}
    blocked = basis("-h", env=env)                     # the CLI itself imports neither
    assert "regime" in blocked.stdout
    out = basis("regime", str(HERE / "sweep_tiny.yaml"), "--sweep-dir",
                str(tmp_path / "sweep"), env=env)
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert lines[-1]["summary"] and lines[0]["init_ap50"] is not None
    check = basis("sweep", str(HERE / "sweep_tiny.yaml"), "--sweep-dir",
                  str(tmp_path / "other"), env=env, code=2)   # a sweep needs them
    assert "mlflow" in (check.stdout + check.stderr).lower()


@pytest.mark.slow
@pytest.mark.slurm
def test_pretrain_stage_is_computed_once_per_sweep_and_reused(slurm_cluster, tmp_path):
    """On the local Slurm: one pretrain job in sacct for the regime of two seeds and a
    sweep of the same config, and none for a second sweep with the same pretraining."""
    import subprocess

    import torch
    import yaml

    from tests.jobs.test_sweep_e2e import HERE, basis

    sweep = tmp_path / "sweep"
    config = HERE / "sweep_pretrain.yaml"
    basis("regime", str(config), "--profile", "local-slurm", "--sweep-dir", str(sweep))
    basis("sweep", str(config), "--profile", "local-slurm", "--sweep-dir", str(sweep))
    other = yaml.safe_load(config.read_text())
    other["study"]["N"] = [24]            # another grid, the same pretraining
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    basis("sweep", str(tmp_path / "other.yaml"), "--profile", "local-slurm", "--sweep-dir",
          str(sweep), "--force")
    pre = [p for p in (sweep / "stages").glob("pretrain-*") if p.is_dir()]
    assert len(pre) == 1 and (pre[0] / "DONE").exists()
    subs = dag.submissions(StageFolder(pre[0]))
    assert len(subs) == 1
    ids = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "--name",
                          "basis-pretrain-pretrain"], capture_output=True, text=True,
                         check=True).stdout.split()
    mine = [line for line in ids if line.split("|")[0] == subs[0].job_id]
    assert mine and mine[0].endswith("|COMPLETED"), ids
    # every init stage started from its encoder: equal weights before training are gone,
    # but the init stages name it as their input
    enc = torch.load(pre[0] / "encoder.pt", weights_only=True)["encoder"]
    assert enc and all(torch.isfinite(v).all() for v in enc.values() if v.is_floating_point())
    for init in (sweep / "stages").glob("init-*/config.json"):
        assert json.loads(init.read_text())["recipe"]["pretrain"] is not None
    assert len([p for p in (sweep / "stages").glob("init-*") if p.is_dir()]) == 2
