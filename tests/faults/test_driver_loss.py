"""The sweep driver killed mid-sweep: ``--resume`` finishes every trial exactly once."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.jobs.test_sweep_e2e import CONFIG, _alive, basis, check_records, mlflow_children

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def _wait(pred, timeout_s: float, what: str) -> None:
    deadline = time.time() + timeout_s
    while not pred():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


def test_killed_driver_then_resume(tmp_path):
    sweep = tmp_path / "sweep"
    basis("sweep", str(CONFIG), "--profile", "local", "--sweep-dir", str(sweep), "--detach",
          timeout=60)
    pid = int((sweep / "driver.pid").read_text())
    # kill it while jobs run: after the shared init stage, before the trials are done
    _wait(lambda: list((sweep / "stages").glob("init-*/DONE")), 300, "the init stage")
    _wait(lambda: list((sweep / "stages").glob("annotate-*/job_ids")), 120, "a trial's job")
    os.killpg(pid, signal.SIGKILL)      # the driver, Ray and its trial actors at once
    _wait(lambda: not _alive(pid), 30, "the driver to die")
    done_before = list((sweep / "results" / "trials").rglob("*.parquet")) \
        if (sweep / "results" / "trials").exists() else []
    assert len(done_before) < 4, "the sweep finished before it could be killed"

    out = basis("sweep", "--resume", str(sweep))
    assert "| β = 0.3 |" in out.stdout
    check_records(sweep, n_trials=4)            # 4 COMPLETED rows, 4 MLflow child runs
    _, runs = mlflow_children(sweep)
    assert sorted(r.data.tags["trial"] for r in runs) == sorted(
        p.stem for p in Path(sweep / "results" / "trials").rglob("*.parquet"))
    # the shared init stage was not recomputed by the resumed driver
    inits = [p for p in (sweep / "stages").glob("init-*") if p.is_dir()]
    assert len(inits) == 1
    assert len((inits[0] / "job_ids").read_text().splitlines()) == 1
