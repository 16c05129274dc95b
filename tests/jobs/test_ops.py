"""Sweep operations on real parts: ``--dry-run``, the code-aware stage cache
(``--reuse-stale``), ``basis clean`` and ``basis cancel`` (local processes and the
local Slurm)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from jobs.config import SweepConfig
from tests.jobs.test_sweep_e2e import CONFIG, HERE, _alive, basis, mlflow_children

ROOT = HERE.parent.parent


def _stage_rows(out: str) -> dict[str, list[str]]:
    """The dry run's stage table: kind → its cells."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 10 and cells[0] not in ("kind", "---"):
            rows[cells[0]] = cells
    return rows


def _hours(out: str, kind: str) -> float:
    return float(_stage_rows(out)[kind][8])


def test_dry_run_lists_the_plan_and_leaves_no_trace(tmp_path):
    """The grid config on the local Slurm profile: every trial, every stage new, the
    inits as one job array, resources, a compute estimate that scales with the
    training budget, the annotation days per arm; nothing written, nothing submitted."""
    grid = HERE / "sweep_grid.yaml"
    cfg = SweepConfig.load(grid)
    sweep = tmp_path / "sweep"
    out = basis("sweep", str(grid), "--profile", "local-slurm", "--sweep-dir", str(sweep),
                "--dry-run", timeout=120).stdout
    assert not sweep.exists()
    assert f"trials ({cfg.n_trials()}): {cfg.n_trials()} new" in out
    for t in cfg.trials():
        assert re.search(rf"^  {re.escape(t.key)}\s+new$", out, re.M), t.key
    rows = _stage_rows(out)
    seeds = len(cfg.study.seed)
    assert rows["init"][1:6] == [str(seeds), "0", "0", str(seeds), str(seeds)]
    assert rows["init"][6] == f"1 job array of {seeds}"
    assert rows["score"][6] == f"{seeds} jobs"
    assert "1×2 task(s) × 1 CPU" in rows["annotate"][7] and "debug" in rows["annotate"][7]
    assert "CPU-h" in rows["annotate"][9] and "estimated compute:" in out
    for mode in cfg.study.modes:
        for n in cfg.study.N:
            assert re.search(rf"^\| {mode} \| {n} \| - \| \d+\.\d\d \| - \|$", out, re.M)

    # twice the epochs → about twice the training hours of the annotation stages
    raw = yaml.safe_load(grid.read_text())
    raw["train"]["epochs"] *= 2
    longer = tmp_path / "longer.yaml"
    longer.write_text(yaml.safe_dump(raw))
    out2 = basis("sweep", str(longer), "--profile", "local-slurm", "--sweep-dir",
                 str(sweep), "--dry-run", timeout=120).stdout
    ratio = _hours(out2, "annotate") / _hours(out, "annotate")
    assert 1.5 < ratio <= 2.0, ratio
    assert not sweep.exists() and "squeue" not in out


def _repo_copy(dest: Path) -> Path:
    """The code a sweep needs, copied so that a test can change it."""
    for name in ("basis", "jobs", "hpc", "analysis", "slurm", "configs"):
        shutil.copytree(ROOT / name, dest / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def _basis_in(repo: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "jobs.cli", *args], capture_output=True,
                         text=True, timeout=timeout, cwd=repo,
                         env={**os.environ, "PYTHONPATH": str(repo), "PYTHONUNBUFFERED": "1"})
    assert out.returncode == 0, f"{args} failed:\n{out.stdout[-3000:]}\n{out.stderr[-4000:]}"
    return out


def _done(sweep: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime for p in (sweep / "stages").glob("*/DONE")}


@pytest.mark.slow
def test_a_code_change_makes_stages_stale_and_a_resume_recomputes_them(tmp_path):
    from analysis.io import read

    repo = _repo_copy(tmp_path / "repo")
    sweep = tmp_path / "sweep"
    raw = yaml.safe_load(CONFIG.read_text())
    raw["study"]["N"] = raw["study"]["N"][:1]           # 2 trials
    config = tmp_path / "two.yaml"
    config.write_text(yaml.safe_dump(raw))
    _basis_in(repo, "sweep", str(config), "--sweep-dir", str(sweep))
    first = _done(sweep)
    code0 = json.loads((sweep / "sweep.json").read_text())["code"]
    assert set(read(sweep, "trials")["code"]) == {code0}
    plan = _basis_in(repo, "sweep", "--resume", str(sweep), "--dry-run").stdout
    assert "trials (2): 2 done" in plan and "stale stages" not in plan
    assert all(r[2] == r[1] for r in _stage_rows(plan).values())   # every stage done

    # a function of basis/ changes: every stage it computes is stale
    train = repo / "basis" / "train.py"
    train.write_text(train.read_text() + "\n\ndef _changed_by_the_test() -> int:\n"
                     "    return 1\n")
    plan = _basis_in(repo, "sweep", "--resume", str(sweep), "--dry-run").stdout
    rows = _stage_rows(plan)
    assert rows and all(r[2] == "0" and r[3] == r[1] for r in rows.values()), plan
    assert "trials (2): 2 stale" in plan
    stale_lines = [ln for ln in plan.splitlines() if " ← " in ln]
    assert len(stale_lines) == len(first)
    assert all(f"(code {code0})" in ln for ln in stale_lines)
    assert _done(sweep) == first            # the dry run wrote nothing

    # --reuse-stale keeps them, and says so
    kept = _basis_in(repo, "sweep", "--resume", str(sweep), "--reuse-stale").stdout
    assert kept.count("kept stale stage:") == len(first)
    assert _done(sweep) == first

    # a plain resume recomputes every stage, and every trial, with the new code
    _basis_in(repo, "sweep", "--resume", str(sweep))
    now = _done(sweep)
    new = set(now) - set(first)
    assert len(new) == len(first) and all(now[k] == v for k, v in first.items())
    code1 = json.loads((sweep / "sweep.json").read_text())["code"]
    trials = read(sweep, "trials")
    assert code1 != code0 and set(trials["code"]) == {code1}
    assert set(trials["status"]) == {"COMPLETED"}
    _, runs = mlflow_children(sweep)
    assert {r.data.tags["code"] for r in runs if r.info.status == "FINISHED"} >= {code1}
    plan = _basis_in(repo, "sweep", "--resume", str(sweep), "--dry-run").stdout
    assert "trials (2): 2 done" in plan and all(r[2] == r[1]
                                                for r in _stage_rows(plan).values())

    # clean: the checkpoints of finished stages go, weights and results stay
    ckpts = sorted((sweep / "stages").glob("*/ckpt.pt"))
    assert ckpts
    listed = _basis_in(repo, "clean", str(sweep), "--dry-run").stdout
    assert all(str(p) in listed for p in ckpts) and all(p.exists() for p in ckpts)
    freed = sum(p.stat().st_size for p in ckpts)
    done = _basis_in(repo, "clean", str(sweep)).stdout
    assert f"removed {len(ckpts)} file(s)" in done and not any(p.exists() for p in ckpts)
    m = re.search(r"([\d.]+) (KiB|MiB|GiB) freed", done)
    assert m, done
    unit = 1024 ** (1 + ["KiB", "MiB", "GiB"].index(m.group(2)))
    assert abs(float(m.group(1)) * unit - freed) / freed < 0.05
    assert all((p.parent / "model.pt").exists() for p in ckpts)
    assert "| β = 0.3 |" in _basis_in(repo, "tables", str(sweep)).stdout
    again = _done(sweep)
    _basis_in(repo, "sweep", "--resume", str(sweep))     # nothing to compute
    assert _done(sweep) == again


def _wait(pred, timeout_s: float, what: str) -> None:
    deadline = time.time() + timeout_s
    while not pred():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _submitted(sweep: Path) -> list[dict]:
    return [json.loads(line) for p in (sweep / "stages").glob("*/submissions.jsonl")
            for line in p.read_text().splitlines() if line.strip()]


def _check_cancelled(sweep: Path) -> None:
    from analysis.io import read

    trials = read(sweep, "trials")
    assert len(trials) == 4 and set(trials["status"]) == {"CANCELLED"}, trials
    assert all("cancelled by `basis cancel`" in e for e in trials["error"])
    meta, runs = mlflow_children(sweep)
    assert runs and {r.info.status for r in runs} == {"KILLED"}
    from mlflow.tracking import MlflowClient

    parent = MlflowClient(tracking_uri=meta["mlflow_uri"]).get_run(meta["parent_run_id"])
    assert parent.info.status == "KILLED"
    status = basis("status", str(sweep)).stdout
    assert "4 trials: 4 cancelled" in status


@pytest.mark.slow
def test_cancel_a_detached_local_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    basis("sweep", str(CONFIG), "--profile", "local", "--sweep-dir", str(sweep), "--detach",
          timeout=60)
    pid = int((sweep / "driver.pid").read_text().split()[0])
    _wait(lambda: _submitted(sweep), 300, "a first stage job")
    jobs = [int(s["job_id"]) for s in _submitted(sweep)]
    out = basis("cancel", str(sweep), timeout=120).stdout
    assert f"ended the driver (pid {pid}" in out
    _wait(lambda: not _alive(pid), 30, "the driver to end")
    _wait(lambda: not any(_alive(j) for j in jobs), 30, "its local jobs to end")
    _check_cancelled(sweep)
    assert "basis sweep --resume" in out


@pytest.mark.slow
@pytest.mark.slurm
def test_cancel_on_local_slurm_then_resume(slurm_cluster, tmp_path):
    raw = yaml.safe_load(CONFIG.read_text())
    raw["name"] = f"cancel{os.getpid()}x{int(time.time()) % 100000}"
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    sweep = tmp_path / "sweep"
    out = basis("sweep", str(config), "--profile", "local-slurm", "--sweep-dir", str(sweep),
                "--detach", timeout=120).stdout
    driver = (sweep / "driver.job").read_text().strip()
    assert f"Slurm job {driver}" in out

    def queued() -> list[str]:
        return [s["job_id"] for s in _submitted(sweep) if s["executor"] == "slurm"]

    def trial_stage() -> bool:
        # the init stages go in before the trials start: cancel once a trial has
        # submitted a stage of its own, so that trial runs are open in MLflow
        return any(p.parent.name.split("-")[0] != "init" and p.read_text().strip()
                   for p in (sweep / "stages").glob("*/submissions.jsonl"))

    _wait(trial_stage, 400, "a trial's first stage job in Slurm")
    out = basis("cancel", str(sweep), timeout=180).stdout
    assert f"scancelled the driver's Slurm job {driver}" in out
    ids = queued()
    m = re.search(r"scancelled (\d+) Slurm job\(s\)(: (.*))?$", out, re.M)
    assert m and int(m.group(1)) >= 1, out
    assert set(m.group(3).split(", ")) <= set(ids)    # recorded ids only, no pattern

    def states(job_ids: list[str]) -> dict[str, str]:
        got = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j",
                              ",".join(job_ids)], capture_output=True, text=True, check=True)
        return dict(line.split("|")[:2] for line in got.stdout.splitlines() if "|" in line)

    def ended() -> bool:
        st = states([driver, *ids])
        return all(not s.startswith(("RUNNING", "PENDING", "COMPLETING"))
                   for s in st.values()) and driver in st
    _wait(ended, 120, "the sweep's jobs to end")
    st = states([driver, *ids])
    assert st[driver].startswith("CANCELLED"), st
    assert any(s.startswith("CANCELLED") for k, s in st.items() if k != driver), st
    _check_cancelled(sweep)

    basis("sweep", "--resume", str(sweep), "--profile", "local-slurm")
    from analysis.io import read

    assert set(read(sweep, "trials")["status"]) == {"COMPLETED"}
    assert "4 trials: 4 done" in basis("status", str(sweep)).stdout
