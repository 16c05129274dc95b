"""The whole chain on real parts: Ray Tune → submitit → (Slurm) → DDP jobs → MLflow,
Parquet → the table. Runs the ``basis`` command as a user would."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "sweep_tiny.yaml"


def basis(*args: str, timeout: int = 900, code: int = 0,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "jobs.cli", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                         cwd=HERE.parent.parent,
                         env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    assert out.returncode == code, f"{cmd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    return out


def mlflow_children(sweep: Path) -> tuple[dict, list]:
    from mlflow.tracking import MlflowClient

    meta = json.loads((sweep / "sweep.json").read_text())
    client = MlflowClient(tracking_uri=meta["mlflow_uri"])
    runs = client.search_runs([meta["experiment_id"]],
                              f"tags.mlflow.parentRunId = '{meta['parent_run_id']}'")
    return meta, runs


def check_records(sweep: Path, n_trials: int, table: bool = True) -> list[str]:
    """Assert the Parquet rows, the MLflow runs and the table; return the job ids."""
    from analysis.io import read
    from analysis.tables import render

    trials = read(sweep, "trials")
    assert len(trials) == n_trials
    assert set(trials["status"]) == {"COMPLETED"}, trials[["trial", "error"]].to_string()
    assert all(math.isfinite(a) and 0.0 <= a <= 1.0 for a in trials["ap50"])
    assert all(math.isfinite(m) for m in trials["mae"])
    meta, runs = mlflow_children(sweep)
    assert len(runs) == n_trials
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=meta["mlflow_uri"])
    for run in runs:
        nested = client.search_runs([meta["experiment_id"]],
                                    f"tags.mlflow.parentRunId = '{run.info.run_id}'")
        kinds = sorted(r.data.tags["basis.stage"] for r in nested)
        assert kinds == ["annotate", "init", "score"], kinds   # a nested run per stage
        by_kind = {r.data.tags["basis.stage"]: r for r in nested}
        for r in nested:
            assert r.info.status == "FINISHED" and r.data.tags["stage_dir"]
            assert r.data.tags["stage_dir"].endswith(r.data.tags["basis.stage"] + "-"
                                                     + r.data.params["address"])
            assert r.data.params["code"] == r.data.tags["code"]
        for kind in ("init", "annotate"):   # the spec is the stage run's params
            assert by_kind[kind].data.params["recipe.seed"] == run.data.tags["seed"]
        assert Path(by_kind["init"].data.tags["stage_dir"]).name == by_kind[
            "score"].data.params["init"]    # an input is named by its folder
        ann = next(r for r in nested if r.data.tags["basis.stage"] == "annotate")
        assert ann.data.metrics["ap50"] == run.data.metrics["ap50"]
        assert len(client.get_metric_history(ann.info.run_id, "loss")) >= 2   # per epoch
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "selected_ids.json", "image_scores.parquet",
                "qualitative.png"} <= names, names
        for tag in ("N", "beta", "seed", "mode", "slurm_job_id", "tune_trial_id"):
            assert run.data.tags.get(tag), (tag, run.data.tags)
        assert "ap50" in run.data.metrics
        assert run.info.status == "FINISHED"
    if table:   # the tiny config's grid
        text = render(sweep)
        assert "| β = 0.3 |" in text and "| β = 0.6 |" in text and "| 20 | 28 |" in text
    ids = {j for s in trials["slurm_job_ids"] for j in s.split(",") if j}
    assert ids
    return sorted(ids)


#: The most ``sacct``/``squeue`` calls a running trial may make in a minute: submitit polls
#: a job 0, 2, 4, 8, 16, 32 s after it was submitted and then every minute at most, so
#: a trial whose stage jobs last seconds calls about 6 times per job and minute.
SCHEDULER_CALLS_PER_MINUTE_PER_TRIAL = 20


def _counting_shims(folder: Path, log: Path) -> Path:
    """``sacct`` and ``squeue`` that log each call (time, name) and run the real one."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("sacct", "squeue"):
        real = shutil.which(name)
        assert real, f"{name} is not installed"
        shim = folder / name
        shim.write_text(f'#!/bin/sh\necho "$(date +%s.%N) {name}" >> "{log}"\n'
                        f'exec "{real}" "$@"\n')
        shim.chmod(0o755)
    log.touch()
    return folder


@pytest.mark.slow
@pytest.mark.slurm
def test_grid_on_local_slurm_shares_init_and_score_per_seed(slurm_cluster, tmp_path):
    """2 N × 2 β × 2 seeds × {oracle, predicted} + random: 20 trials, one row each,
    exactly one init and one score job per seed in sacct (the inits as one job array),
    2-task gloo DDP jobs."""
    import yaml

    raw = yaml.safe_load((HERE / "sweep_grid.yaml").read_text())
    raw["name"] = f"grid{os.getpid()}x{int(time.time()) % 100000}"   # unique job names
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(raw))
    sweep = tmp_path / "sweep"
    calls = tmp_path / "scheduler-calls.log"
    out = basis("sweep", str(config), "--profile", "local-slurm", "--sweep-dir", str(sweep),
                env={"PATH": f"{_counting_shims(tmp_path / 'bin', calls)}:{os.environ['PATH']}"})
    assert "Table 4" in out.stdout and "Table 3" in out.stdout
    # the scheduler's load: sacct/squeue calls per minute are bounded by the trials that
    # run at once (each polls its own jobs), not by the 20 trials of the grid
    stamps = sorted(float(line.split()[0]) for line in calls.read_text().splitlines())
    per_minute = max(sum(1 for t in stamps if t0 <= t < t0 + 60) for t0 in stamps)
    concurrent = int(yaml.safe_load((HERE.parent.parent / "slurm" / "profiles" /
                                     "local-slurm.yaml").read_text())["max_concurrent_trials"])
    minutes = (stamps[-1] - stamps[0]) / 60
    print(f"scheduler calls: {len(stamps)} in {minutes:.1f} min, at most {per_minute} in "
          f"a minute, {concurrent} trials at once")
    assert per_minute <= SCHEDULER_CALLS_PER_MINUTE_PER_TRIAL * concurrent, per_minute
    assert "mlflow ui --backend-store-uri" in out.stdout
    job_ids = check_records(sweep, n_trials=20, table=False)

    def sacct(kind: str) -> list[list[str]]:
        got = subprocess.run(["sacct", "-n", "-X", "-P", "-a", "-S", "now-2hours", "-o",
                              "JobID,State,NTasks,JobName", "--name",
                              f"basis-{raw['name']}-{kind}"],
                             capture_output=True, text=True, check=True)
        return [line.split("|") for line in got.stdout.split()]

    inits, scores = sacct("init"), sacct("score")
    assert len(inits) == 2 and len(scores) == 2, (inits, scores)
    assert len({j[0].split("_")[0] for j in inits}) == 1 and all("_" in j[0] for j in inits)
    annotates = sacct("annotate")
    assert 5 <= len(annotates) <= 16      # equal selections (every random draw…) share one
    every = inits + scores + annotates
    assert {j[1] for j in every} == {"COMPLETED"}, every
    assert {j[0] for j in every} == set(job_ids)   # the trials name every job, no other
    kinds = [p.parent.name.split("-")[0] for p in (sweep / "stages").glob("*/DONE")]
    assert kinds.count("init") == 2 and kinds.count("score") == 2
    assert len(kinds) == len(every)
    # DDP really ran on 2 ranks: the stage logs show both ranks joining the group
    logs = list((sweep / "submitit").rglob("*_1_log.err"))
    assert logs and any("rank 1/2" in p.read_text() for p in logs)
    status = basis("status", str(sweep)).stdout
    assert "20 trials: 20 done" in status


@pytest.mark.slow
def test_detached_sweep_on_local_executor_then_resume_without_rework(tmp_path):
    sweep = tmp_path / "sweep"
    out = basis("sweep", str(CONFIG), "--profile", "local", "--sweep-dir", str(sweep),
                "--detach", timeout=60)
    assert "runs detached" in out.stdout and (sweep / "driver.pid").exists()
    pid = int((sweep / "driver.pid").read_text().split()[0])
    deadline = time.time() + 600
    while time.time() < deadline and _alive(pid):
        time.sleep(2)
    assert not _alive(pid), "the detached driver did not finish in 10 minutes"
    check_records(sweep, n_trials=4)
    stamps = {p: p.stat().st_mtime for p in (sweep / "stages").rglob("DONE")}
    assert 3 <= len(stamps) <= 6
    # resume: every trial and stage is found done, nothing re-runs
    out = basis("sweep", "--resume", str(sweep))
    assert {p: p.stat().st_mtime for p in (sweep / "stages").rglob("DONE")} == stamps
    _, runs = mlflow_children(sweep)
    assert len(runs) == 4
    assert "| β = 0.3 |" in out.stdout
    status = basis("status", str(sweep)).stdout
    assert "4 trials: 4 done" in status and "predicted-b0.60-N28-s0" in status


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as ended: init here does not reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def test_config_error_is_caught_before_any_submission(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIG.read_text().replace("beta: [0.3, 0.6]", "beta: [0.3, 1.6]"))
    cmd = [sys.executable, "-m", "jobs.cli", "sweep", str(bad), "--sweep-dir",
           str(tmp_path / "s")]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent.parent)
    assert out.returncode == 2
    assert "study.beta=1.6 is outside [0, 1]" in out.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_segmentation_network_on_strong_and_pseudo_labels(tmp_path):
    from analysis.io import read
    from analysis.tables import render

    sweep = tmp_path / "sweep"
    basis("sweep", str(HERE / "sweep_segment.yaml"), "--sweep-dir", str(sweep))
    trials = read(sweep, "trials").sort_values("pool_fraction")
    assert trials["status"].tolist() == ["COMPLETED", "COMPLETED"], trials["error"].tolist()
    assert trials["pool_fraction"].tolist() == [0.5, 1.0]
    assert all(0.0 <= a <= 1.0 for a in trials["seg_ap50"])
    # the budget grows by the IL+C labels of the pseudo-labelled images: 8 more × 22.22 s
    extra = trials["seg_budget_s"].diff().iloc[-1]
    assert extra == pytest.approx(8 * 22.22, abs=0.01)
    # one pseudo stage and one strong-only control shared by both fractions, one segment
    # stage each
    kinds = sorted(p.parent.name.split("-")[0] for p in (sweep / "stages").glob("*/DONE"))
    assert kinds == ["annotate", "control", "init", "pseudo", "score", "segment", "segment"]
    control = json.loads(next((sweep / "stages").glob("control-*/result.json")).read_text())
    assert control["n_train"] == 20 and trials["ctl_ap50"].tolist() == [control["ap50"]] * 2
    pseudo = json.loads(next((sweep / "stages").glob("pseudo-*/result.json")).read_text())
    assert pseudo["n_images"] == 16
    # images whose pseudo-masks are all empty are left out (after 2 epochs most are)
    seg_dirs = trials["log_path"].tolist()
    n_pseudo = [json.loads((Path(d) / "result.json").read_text())["n_pseudo"] for d in seg_dirs]
    assert n_pseudo[0] <= 8 and n_pseudo[1] <= 16 and n_pseudo[0] <= n_pseudo[1]
    assert "Segmentation network" in render(sweep, table=5)
    assert "Strong-only RSIS" in render(sweep, table=5)
    seg = json.loads((Path(seg_dirs[1]) / "result.json").read_text())
    assert seg["pseudo_images"] == 16 and seg["pseudo_kept"] == seg["n_pseudo"]
    assert seg["pseudo_left_out"] == 16 - seg["n_pseudo"]      # none dropped silently
