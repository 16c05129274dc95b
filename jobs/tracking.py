"""MLflow records of a sweep: one experiment, a parent run, a child run per trial.

Only the driver and the trial adapters talk to MLflow; jobs on compute nodes write
files, which the adapters stream into MLflow (nodes often cannot reach the server).
The driver creates the store and the experiment before any trial starts, because
several processes creating a fresh sqlite database at once fail.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)
PARENT_TAG = "mlflow.parentRunId"


def default_uri(sweep_dir: str | Path) -> str:
    """The embedded default store: an sqlite file inside the sweep folder."""
    return f"sqlite:///{Path(sweep_dir).resolve() / 'mlflow.db'}"


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _params(params: Mapping[str, Any]) -> dict[str, str]:
    return {k: ("None" if v is None else str(v))[:6000] for k, v in params.items()}


def open_sweep(uri: str, name: str, params: Mapping[str, Any],
               parent_run_id: str | None = None,
               artifact_root: str | Path | None = None) -> tuple[str, str]:
    """Create (or reopen) the sweep's experiment and parent run → (experiment_id, run_id)."""
    import mlflow

    client = _client(uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = Path(artifact_root).resolve().as_uri() if artifact_root else None
        exp_id = client.create_experiment(name, artifact_location=location)
    else:
        exp_id = exp.experiment_id
    if parent_run_id:
        try:
            client.get_run(parent_run_id)
            client.update_run(parent_run_id, status="RUNNING")
            return exp_id, parent_run_id
        except mlflow.exceptions.MlflowException:
            log.warning("parent run %s not found in %s; starting a new one", parent_run_id, uri)
    run = client.create_run(exp_id, run_name=name, tags={"basis.kind": "sweep"})
    client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, v)
                                              for k, v in _params(params).items()])
    return exp_id, run.info.run_id


def finish(uri: str, run_id: str, status: str = "FINISHED") -> None:
    _client(uri).set_terminated(run_id, status=status)


class TrialRun:
    """The child run of one trial; every call is one short write to the store."""

    def __init__(self, uri: str, experiment_id: str, parent_run_id: str, name: str,
                 params: Mapping[str, Any], tags: Mapping[str, Any]) -> None:
        import mlflow

        self.uri = uri
        self.client = _client(uri)
        tags = {PARENT_TAG: parent_run_id, "basis.kind": "trial",
                **{k: str(v) for k, v in tags.items()}}
        # a trial whose driver died comes back to its own run: one run per trial
        found = self.client.search_runs(
            [experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}' "
            f"and tags.trial = '{tags.get('trial', name)}'", max_results=1)
        if found:
            self.run_id: str = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            for k, v in tags.items():
                self.client.set_tag(self.run_id, k, v)
            return
        run = self.client.create_run(experiment_id, run_name=name, tags=tags)
        self.run_id = run.info.run_id
        self.client.log_batch(self.run_id, params=[mlflow.entities.Param(k, v)
                                                   for k, v in _params(params).items()])

    def tag(self, key: str, value: Any) -> None:
        self.client.set_tag(self.run_id, key, str(value))

    def metrics(self, values: Mapping[str, float], step: int | None = None) -> None:
        import time

        import mlflow

        ts = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            mlflow.entities.Metric(k, float(v), ts, step or 0) for k, v in values.items()
            if v is not None])

    def artifact(self, path: str | Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)
