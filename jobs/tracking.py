"""MLflow records of a sweep: one experiment, a parent run, a child run per trial.

Only the driver and the trial adapters talk to MLflow; jobs on compute nodes write
files, which the adapters stream into MLflow (nodes often cannot reach the server).
The driver creates the store and the experiment before any trial starts, because
several processes creating a fresh sqlite database at once fail.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)
PARENT_TAG = "mlflow.parentRunId"
# a tracking server that went away must cost seconds, not MLflow's minutes of retries
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")


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
    """The child run of one trial, written through an on-disk buffer.

    Every call appends an event to ``BUFFER/<trial>.jsonl`` first and then replays the
    events not yet in the store. When the store cannot be reached (a tracking server
    that went away) the trial goes on and the events wait on disk; `sync` replays them
    later. One code path, online and offline. A replayed ``open`` finds the trial's
    run by its tags, so a run is never created twice.
    """

    RETRY_S = 30.0

    def __init__(self, uri: str, experiment_id: str, parent_run_id: str, name: str,
                 params: Mapping[str, Any], tags: Mapping[str, Any],
                 buffer_dir: str | Path | None = None) -> None:
        import tempfile

        self.uri = uri
        self.key = str(tags.get("trial", name))
        folder = Path(buffer_dir) if buffer_dir else Path(tempfile.mkdtemp(prefix="basis-mlf-"))
        self.buffer = Buffer(folder / f"{self.key}.jsonl", uri)
        self.buffer.append({"op": "open", "experiment_id": experiment_id,
                            "parent": parent_run_id, "name": name, "params": _params(params),
                            "tags": {PARENT_TAG: parent_run_id, "basis.kind": "trial",
                                     **{k: str(v) for k, v in tags.items()}}})

    @property
    def run_id(self) -> str | None:
        """The MLflow run id once the store has been reached (None while offline)."""
        return self.buffer.run_id

    def tag(self, key: str, value: Any) -> None:
        self.buffer.append({"op": "tag", "key": key, "value": str(value)})

    def metrics(self, values: Mapping[str, float], step: int | None = None) -> None:
        import time

        self.buffer.append({"op": "metrics", "step": step or 0, "ts": int(time.time() * 1000),
                            "values": {k: float(v) for k, v in values.items()
                                       if v is not None}})

    def artifact(self, path: str | Path) -> None:
        self.buffer.append({"op": "artifact", "path": str(Path(path).resolve())})

    def end(self, status: str) -> None:
        self.buffer.append({"op": "end", "status": status})

    def stage(self, kind: str, params: Mapping[str, Any], tags: Mapping[str, Any]
              ) -> "StageRun":
        """A run nested under this trial's run for one of its stages."""
        return StageRun(self, kind, params, tags)


class StageRun(TrialRun):
    """The nested run of one stage of a trial (``init``, ``score``, ``annotate`` …).

    Buffered like its trial, in ``BUFFER/stages/<trial>/<kind>.jsonl``; its parent is the
    trial's run, found at replay time (the trial's run id is unknown while offline).
    """

    def __init__(self, trial: TrialRun, kind: str, params: Mapping[str, Any],
                 tags: Mapping[str, Any]) -> None:
        self.uri, self.key = trial.uri, trial.key
        folder = trial.buffer.path.parent / "stages" / trial.key
        self.buffer = Buffer(folder / f"{kind}.jsonl", trial.uri)
        open_event = trial.buffer.first()
        self.buffer.append({
            "op": "open", "experiment_id": open_event["experiment_id"],
            "parent_run_file": str(trial.buffer.run_path), "name": f"{trial.key}/{kind}",
            "params": _params(params),
            "match": {"trial": trial.key, "basis.stage": kind},
            "tags": {"basis.kind": "stage", "basis.stage": kind, "trial": trial.key,
                     **{k: str(v) for k, v in tags.items()}}})

    def history(self, records: list[tuple[int, Mapping[str, float]]]) -> None:
        """Per-epoch metrics in one event: ``[(epoch, {name: value}), …]``."""
        import time

        ts = int(time.time() * 1000)
        self.buffer.append({"op": "history", "ts": ts, "steps": [
            {"step": int(e), "values": {k: float(v) for k, v in vals.items()}}
            for e, vals in records]})


class Buffer:
    """An append-only event log of one run and how far it has reached the store."""

    def __init__(self, path: Path, uri: str) -> None:
        self.path, self.uri = path, uri
        self.done_path = path.with_suffix(".synced")
        self.run_path = path.with_suffix(".run")
        self.run_id: str | None = (self.run_path.read_text().strip()
                                   if self.run_path.exists() else None)
        self._offline_until = 0.0
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, event: dict[str, Any]) -> None:
        import json
        import time

        with open(self.path, "a") as fh:
            fh.write(json.dumps(event) + "\n")
        if time.time() >= self._offline_until:
            self.flush()

    def first(self) -> dict[str, Any]:
        """The buffer's first event (its ``open``)."""
        import json

        with open(self.path) as fh:
            return json.loads(fh.readline())

    def pending(self) -> tuple[list[dict[str, Any]], int]:
        import json

        done = int(self.done_path.read_text()) if self.done_path.exists() else 0
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        return [json.loads(line) for line in lines[done:]], done

    def flush(self) -> bool:
        """Replay the pending events; False (and a warning) if the store is unreachable."""
        import time

        events, done = self.pending()
        if not events:
            return True
        try:
            client = _client(self.uri)
            for event in events:
                self._apply(client, event)
                done += 1
                self.done_path.write_text(str(done))
        except Exception as err:  # connection refused, timeouts, server errors
            self._offline_until = time.time() + TrialRun.RETRY_S
            log.warning("MLflow at %s unreachable (%s); %d event(s) of %s wait in %s for "
                        "`basis sync`", self.uri, type(err).__name__, len(events),
                        self.path.stem, self.path)
            return False
        return True

    def _apply(self, client: Any, event: dict[str, Any]) -> None:
        import time

        import mlflow

        op = event["op"]
        if op == "open":
            parent = event.get("parent")
            if parent is None:    # a stage run: its trial's run must exist first
                run_file = Path(event["parent_run_file"])
                if not run_file.exists():
                    raise RuntimeError(f"{self.path}: its trial's run is not created yet")
                parent = run_file.read_text().strip()
            tags = {**event["tags"], PARENT_TAG: parent}
            match = event.get("match") or {"trial": tags.get("trial", event["name"])}
            query = " and ".join([f"tags.`{PARENT_TAG}` = '{parent}'"]
                                 + [f"tags.`{k}` = '{v}'" for k, v in match.items()])
            found = client.search_runs([event["experiment_id"]], query, max_results=1)
            if found:   # a trial whose driver died comes back to its own run
                self.run_id = found[0].info.run_id
                client.update_run(self.run_id, status="RUNNING")
                for k, v in tags.items():
                    client.set_tag(self.run_id, k, v)
            else:
                self.run_id = client.create_run(event["experiment_id"], run_name=event["name"],
                                                tags=tags).info.run_id
                client.log_batch(self.run_id, params=[
                    mlflow.entities.Param(k, v) for k, v in event["params"].items()])
            self.run_path.write_text(self.run_id)
            return
        if self.run_id is None:
            raise RuntimeError(f"{self.path}: events before the run was opened")
        if op == "tag":
            client.set_tag(self.run_id, event["key"], event["value"])
        elif op == "metrics":
            client.log_batch(self.run_id, metrics=[
                mlflow.entities.Metric(k, v, event.get("ts", int(time.time() * 1000)),
                                       event["step"]) for k, v in event["values"].items()])
        elif op == "history":
            metrics = [mlflow.entities.Metric(k, v, event["ts"], step["step"])
                       for step in event["steps"] for k, v in step["values"].items()]
            for i in range(0, len(metrics), 900):    # log_batch takes ≤ 1000 metrics
                client.log_batch(self.run_id, metrics=metrics[i:i + 900])
        elif op == "artifact":
            if Path(event["path"]).exists():
                client.log_artifact(self.run_id, event["path"])
            else:   # deleted meanwhile: nothing to upload, and no reason to block the rest
                log.warning("%s: artifact %s is gone; skipped", self.path.stem, event["path"])
        elif op == "end":
            client.set_terminated(self.run_id, status=event["status"])


def sync(buffer_dir: str | Path, uri: str) -> dict[str, int]:
    """Replay every trial's pending events (``basis sync``) → counts of synced and
    still-pending runs."""
    out = {"synced": 0, "pending": 0, "events": 0}
    folder = Path(buffer_dir)
    # trials first: a stage run is nested under its trial's run
    for path in sorted(folder.glob("*.jsonl")) + sorted(folder.glob("stages/*/*.jsonl")):
        buf = Buffer(path, uri)
        events, _ = buf.pending()
        if buf.flush():
            out["synced"] += 1
            out["events"] += len(events)
        else:
            out["pending"] += 1
    return out
