"""The MLflow server goes away mid-sweep: trials finish, Parquet is complete, events
wait on disk, and ``basis sync`` back-fills MLflow once the server is back."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs import tracking
from tests.jobs.test_sweep_e2e import CONFIG, _alive, basis

pytestmark = [pytest.mark.faults]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``mlflow server`` on 127.0.0.1 with its own sqlite store."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        mlflow = Path(sys.executable).with_name("mlflow")
        self.proc = subprocess.Popen(
            [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
             "--default-artifact-root", str(self.folder / "artifacts"), "--workers", "1"],
            stdout=open(self.folder / "server.log", "ab"), stderr=subprocess.STDOUT,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            start_new_session=True)
        deadline = time.time() + 90
        while True:
            try:
                tracking._client(self.uri).search_experiments()
                return
            except Exception:
                assert time.time() < deadline, (self.folder / "server.log").read_text()[-2000:]
                time.sleep(1)

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(30)
            self.proc = None


@pytest.mark.slow
def test_server_outage_then_sync(tmp_path):
    server = Server(tmp_path)
    server.start()
    sweep = tmp_path / "sweep"
    try:
        basis("sweep", str(CONFIG), "--sweep-dir", str(sweep), "--tracking-uri", server.uri,
              "--detach", timeout=120)
        pid = int((sweep / "driver.pid").read_text().split()[0])
        deadline = time.time() + 300
        while not list((sweep / "tracking").glob("*.run")):   # a trial reached MLflow
            assert time.time() < deadline and _alive(pid)
            time.sleep(0.5)
        server.stop()                                          # the outage
        while _alive(pid):
            assert time.time() < deadline + 600, "the sweep did not finish without MLflow"
            time.sleep(2)

        from analysis.io import read

        trials = read(sweep, "trials")
        assert len(trials) == 4 and set(trials["status"]) == {"COMPLETED"}
        pending = [p for p in (sweep / "tracking").glob("*.jsonl")
                   if tracking.Buffer(p, server.uri).pending()[0]]
        assert pending, "nothing was left to sync: the outage came too late"

        server.start()                                         # it is back
        out = basis("sync", str(sweep))
        assert "0 run(s) still pending" in out.stdout
        client = tracking._client(server.uri)
        import json

        meta = json.loads((sweep / "sweep.json").read_text())
        runs = client.search_runs([meta["experiment_id"]],
                                  f"tags.`mlflow.parentRunId` = '{meta['parent_run_id']}'")
        assert sorted(r.data.tags["trial"] for r in runs) == sorted(trials["trial"])
        assert all(r.info.status == "FINISHED" and "ap50" in r.data.metrics for r in runs)
        assert client.get_run(meta["parent_run_id"]).info.status == "FINISHED"
        # a second sync has nothing to do and creates nothing
        assert "synced 0 event(s)" in basis("sync", str(sweep)).stdout
        every = client.search_runs([meta["experiment_id"]])
        kinds = sorted(r.data.tags.get("basis.kind") for r in every)
        # the parent, a run per trial, and (replayed too) a nested run per trial stage
        assert kinds == ["stage"] * 12 + ["sweep"] + ["trial"] * 4, kinds
        trial_ids = {r.info.run_id for r in runs}
        stages = [r for r in every if r.data.tags.get("basis.kind") == "stage"]
        assert {r.data.tags["mlflow.parentRunId"] for r in stages} == trial_ids
        assert all(r.info.status == "FINISHED" for r in stages)
    finally:
        server.stop()
