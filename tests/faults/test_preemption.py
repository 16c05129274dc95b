"""Preemption on the real Slurm: a 2-task DDP stage interrupted twice (submitit's
``_interrupt``: SIGTERM + USR2, as a preempting scheduler sends) checkpoints, is
requeued, resumes from its last epoch and ends exactly where an uninterrupted run ends."""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
import yaml

from jobs.dag import submissions
from jobs.specs import StageFolder
from tests.jobs.test_sweep_e2e import CONFIG, basis, check_records, mlflow_children

pytestmark = [pytest.mark.faults, pytest.mark.slurm, pytest.mark.slow,
              pytest.mark.usefixtures("slurm_cluster")]


def _config(tmp_path: Path) -> Path:
    raw = yaml.safe_load(CONFIG.read_text())
    raw["study"].update(N=[24], beta=[0.3])
    raw["train"].update(epochs=8)
    path = tmp_path / "preempt.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _interrupter(sweep: Path, times: int, log: list, stop: threading.Event) -> None:
    import submitit

    while not stop.is_set() and len(log) < times:
        stages = [p for p in (sweep / "stages").glob("annotate-*") if p.is_dir()]
        subs = submissions(StageFolder(stages[0])) if stages else []
        if subs:
            job_id, folder = subs[0].job_id, subs[0].folder
            seen = _lines(stages[0] / "metrics.jsonl")
            # wait for an epoch written by the current run of the job, then preempt it
            if seen > (log[-1][1] if log else 0):
                submitit.SlurmJob(folder=folder, job_id=job_id)._interrupt()
                log.append((time.time(), seen))
        time.sleep(0.5)


def test_requeued_twice_equals_uninterrupted(tmp_path):
    import torch

    cfg = _config(tmp_path)
    plain, hit = tmp_path / "plain", tmp_path / "preempted"
    basis("sweep", str(cfg), "--profile", "local-slurm", "--sweep-dir", str(plain))
    # the preempted sweep reuses the same init and score stages (content addressed)
    for kind in ("init", "score"):
        done = next(p for p in (plain / "stages").glob(f"{kind}-*") if p.is_dir())
        shutil.copytree(done, hit / "stages" / done.name)

    log: list = []
    stop = threading.Event()
    watcher = threading.Thread(target=_interrupter, args=(hit, 2, log, stop), daemon=True)
    watcher.start()
    try:
        basis("sweep", str(cfg), "--profile", "local-slurm", "--sweep-dir", str(hit))
    finally:
        stop.set()
        watcher.join(5)
    assert len(log) == 2, f"interrupted {len(log)} time(s), expected 2"

    a = next(p for p in (plain / "stages").glob("annotate-*") if p.is_dir())
    b = hit / "stages" / a.name
    assert (b / "DONE").exists()
    assert (a / "result.json").read_text() == (b / "result.json").read_text()
    wa, wb = torch.load(a / "model.pt"), torch.load(b / "model.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # one job id (requeued in place), one trial row, one MLflow run
    assert len(submissions(StageFolder(b))) == 1
    check_records(hit, n_trials=1, table=False)
    assert len(mlflow_children(hit)[1]) == 1
    # it really restarted twice, each time from its checkpoint
    log = next((hit / "submitit").glob(f"{b.name}/*/*_0_log.err")).read_text()
    assert log.count("submitit: Caught signal SIGUSR2") == 2
    assert log.count(f"resuming {b.name} from") == 2
