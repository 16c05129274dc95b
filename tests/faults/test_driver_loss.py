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


def _rows(sweep: Path) -> int:
    folder = sweep / "results" / "trials"
    return len(list(folder.rglob("*.parquet"))) if folder.exists() else 0


#: Where the driver dies: right after it submitted its first job, while jobs run, and
#: while results are being written (some trials recorded, others not yet).
KILL_POINTS = {
    "submission": lambda s: list((s / "stages").glob("init-*/submissions.jsonl")),
    "jobs": lambda s: list((s / "stages").glob("annotate-*/submissions.jsonl")),
    "results": lambda s: _rows(s) >= 1,
}


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_killed_driver_then_resume(tmp_path, point):
    sweep = tmp_path / "sweep"
    basis("sweep", str(CONFIG), "--profile", "local", "--sweep-dir", str(sweep), "--detach",
          timeout=60)
    pid = int((sweep / "driver.pid").read_text().split()[0])
    _wait(lambda: KILL_POINTS[point](sweep), 400, f"the kill point {point!r}")
    os.killpg(pid, signal.SIGKILL)      # the driver, Ray and its trial actors at once
    _wait(lambda: not _alive(pid), 30, "the driver to die")
    assert _rows(sweep) < 4, "the sweep finished before it could be killed"
    stamps = {p: p.stat().st_mtime for p in (sweep / "stages").glob("*/DONE")}

    out = basis("sweep", "--resume", str(sweep))
    assert "| β = 0.3 |" in out.stdout
    check_records(sweep, n_trials=4)            # 4 COMPLETED rows, 4 MLflow child runs
    _, runs = mlflow_children(sweep)
    assert sorted(r.data.tags["trial"] for r in runs) == sorted(
        p.stem for p in Path(sweep / "results" / "trials").rglob("*.parquet"))
    # nothing finished before the kill was computed again
    assert all(p.stat().st_mtime == t for p, t in stamps.items())
    for kind in ("init", "score"):
        dirs = [p for p in (sweep / "stages").glob(f"{kind}-*") if p.is_dir()]
        assert len(dirs) == 1 and (dirs[0] / "DONE").exists()
