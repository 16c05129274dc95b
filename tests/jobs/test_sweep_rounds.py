"""Selection rounds (``study.rounds: 2``) through the real chain on the local Slurm:
``basis sweep`` → Ray Tune → submitit → 2-task DDP stage jobs (init, score, annotate per
round, the pool re-scored by round 1's annotation network) → MLflow, Parquet → the
rounds table and the report."""
from __future__ import annotations

import json
import math
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.jobs.test_sweep_e2e import basis, mlflow_children

HERE = Path(__file__).resolve().parent
MODES = ("random", "predicted", "lowest")


@pytest.mark.slow
@pytest.mark.slurm
def test_two_rounds_on_local_slurm(slurm_cluster, tmp_path):
    import yaml

    from analysis.io import read
    from analysis.report import build
    from jobs.config import TrialConfig
    from jobs.specs import StageFolder
    from jobs.trial import select_images, selection_rng

    raw = yaml.safe_load((HERE / "sweep_rounds.yaml").read_text())
    raw["name"] = f"rounds{os.getpid()}x{int(time.time()) % 100000}"   # unique job names
    config = tmp_path / "rounds.yaml"
    config.write_text(yaml.safe_dump(raw))
    sweep = tmp_path / "sweep"
    basis("sweep", str(config), "--profile", "local-slurm", "--sweep-dir", str(sweep),
          timeout=600)

    trials = read(sweep, "trials").set_index("mode")
    assert sorted(trials.index) == sorted(MODES)
    assert set(trials["status"]) == {"COMPLETED"}, trials[["trial", "error"]].to_string()
    rounds = read(sweep, "rounds").sort_values(["mode", "round"])
    assert rounds.groupby("trial").size().tolist() == [2, 2, 2]      # 2 rows per trial
    for mode in MODES:
        mine = rounds[rounds["mode"] == mode]
        assert mine["round"].tolist() == [1, 2] and mine["n_labelled"].tolist() == [16, 20]
        assert mine["n_selected"].tolist() == [4, 4] and set(mine["status"]) == {"COMPLETED"}
        assert mine["budget_days"].is_monotonic_increasing
        assert all(math.isfinite(a) and 0.0 <= a <= 1.0 for a in mine["ap50"])
        # the last round's network is the trial's result
        last = mine.iloc[-1]
        assert trials.loc[mode, "ap50"] == last["ap50"]
        assert trials.loc[mode, "budget_s"] == last["budget_s"]
        assert trials.loc[mode, "log_path"] == last["stage_dir"]
    budget = rounds.pivot(index="round", columns="mode", values="budget_s")
    assert (budget["random"] < budget["predicted"]).all()           # no IL+C for random
    assert (budget["lowest"] == budget["predicted"]).all()

    # round 2 of the predicted trial selects from round 1's annotation network's scores
    selections = read(sweep, "selections")
    scores = {}
    for done in (sweep / "stages").glob("score-*/DONE"):
        folder = StageFolder(done.parent)
        network = folder.read_result()["network"]
        if network == "init":
            initial = folder
        else:
            labelled = json.loads(folder.config.read_text())["annotate"]["train_ids"]
            scores[tuple(sorted(labelled))] = folder
    init_ids = select_images(initial, TrialConfig(20, None, 0, "random", 12))[0]
    assert len(init_ids) == 12
    for mode in MODES:
        sel = selections[selections["mode"] == mode].sort_values("rank")
        first = sel.loc[sel["round"] == 1, "image_id"].tolist()
        second = sel.loc[sel["round"] == 2, "image_id"].tolist()
        assert len(first) == len(second) == 4
        assert len(set(first + second + init_ids)) == 20             # never labelled twice
        trial = TrialConfig.from_flat_dict(trials.loc[mode].to_dict() | {"mode": mode})
        rng = selection_rng(trial)
        assert select_images(initial, trial, 4, rng)[1] == first
        source = initial if mode == "random" else scores[tuple(sorted(init_ids + first))]
        assert select_images(source, trial, 4, rng, init_ids + first)[1] == second
    assert len(scores) in (1, 2)          # predicted's and lowest's (shared if they agree)

    # the jobs in sacct: one init, the score stages, an annotate per trial and round
    def sacct(kind: str) -> list[list[str]]:
        got = subprocess.run(["sacct", "-n", "-X", "-P", "-a", "-S", "now-2hours", "-o",
                              "JobID,State", "--name", f"basis-{raw['name']}-{kind}"],
                             capture_output=True, text=True, check=True)
        return [line.split("|") for line in got.stdout.split()]

    jobs = {kind: sacct(kind) for kind in ("init", "score", "annotate")}
    assert len(jobs["init"]) == 1 and len(jobs["score"]) == 1 + len(scores)
    assert 4 <= len(jobs["annotate"]) <= 6
    assert {j[1] for js in jobs.values() for j in js} == {"COMPLETED"}, jobs

    # MLflow: a nested run per stage, a later round's named by its round; AP per round
    meta, runs = mlflow_children(sweep)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=meta["mlflow_uri"])
    for run in runs:
        nested = client.search_runs([meta["experiment_id"]],
                                    f"tags.mlflow.parentRunId = '{run.info.run_id}'")
        rescored = [] if run.data.tags["mode"] == "random" else ["score-r2"]
        assert sorted(r.data.tags["basis.stage"] for r in nested) == sorted(
            ["init", "score", "annotate", "annotate-r2", *rescored])
        by_stage = {r.data.tags["basis.stage"]: r for r in nested}
        assert by_stage["annotate-r2"].data.params["address"] != by_stage[
            "annotate"].data.params["address"]
        history = client.get_metric_history(run.info.run_id, "round/ap50")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2]

    # the rounds table: a row per round and strategy; the report's table and figure
    text = basis("tables", str(sweep), "--table", "rounds").stdout
    for label in ("Random subset", "Predicted IoU, β = 0.3", "Lowest score"):
        for r in (1, 2):
            assert sum(line.startswith(f"| {label}, round {r} |")
                       for line in text.splitlines()) == 1, text
    rep = build(sweep)
    assert (rep.md.parent / "tables" / "rounds.csv").exists()
    assert (rep.md.parent / "figures" / "ap_vs_days.png").exists()
