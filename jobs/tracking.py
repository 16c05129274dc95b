"""MLflow records of a sweep: one experiment, a parent run, a child run per trial.

Only the driver and the trial adapters talk to MLflow; jobs on compute nodes write
files, which the adapters stream into MLflow (nodes often cannot reach the server).
The driver creates the store and the experiment before any trial starts, because
several processes creating a fresh sqlite database at once fail.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from analysis.schema import Status, SweepLayout
from jobs.events import TrialObserver, TrialOutcome

if TYPE_CHECKING:
    from jobs.config import TrialConfig
    from jobs.dag import StageFailed, StageResult
    from jobs.specs import StageFolder, StageSpec

log = logging.getLogger(__name__)
PARENT_TAG = "mlflow.parentRunId"
#: A tracking server that went away must cost seconds, not MLflow's minutes of retries.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


#: Seconds a run waits before trying an unreachable store again.
RETRY_S = 30.0


def default_uri(sweep_dir: str | Path) -> str:
    """The embedded default store: an sqlite file inside the sweep folder."""
    return f"sqlite:///{SweepLayout(Path(sweep_dir).resolve()).mlflow_db}"


def _client(uri: str) -> Any:
    for key, value in HTTP_DEFAULTS.items():   # the user's own settings win
        os.environ.setdefault(key, value)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _params(params: Mapping[str, Any]) -> dict[str, str]:
    return {k: ("None" if v is None else str(v))[:6000] for k, v in params.items()}


#: A sweep is a model-training experiment: MLflow 3 UIs that go by this tag open it on its
#: runs, not on the GenAI trace overview ("No data"); 3.17's goes by the page URL's
#: ``workflowType`` instead, which `jobs.ui.experiment_url` sets.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def open_sweep(uri: str, name: str, params: Mapping[str, Any],
               parent_run_id: str | None = None,
               artifact_root: str | Path | None = None) -> tuple[str, str]:
    """Create (or reopen) the sweep's experiment and parent run → (experiment_id, run_id)."""
    client = _client(uri)
    import mlflow

    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = Path(artifact_root).resolve().as_uri() if artifact_root else None
        exp_id = client.create_experiment(name, artifact_location=location,
                                          tags=EXPERIMENT_TAGS)
    else:
        exp_id = exp.experiment_id
        for key, value in EXPERIMENT_TAGS.items():   # an experiment made before the tag
            if exp.tags.get(key) != value:
                client.set_experiment_tag(exp_id, key, value)
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


def finish(uri: str, run_id: str, status: str = Status.COMPLETED.mlflow) -> None:
    _client(uri).set_terminated(run_id, status=status)


@dataclass
class Event:
    """One buffered MLflow call of a run; ``op`` names it in the buffer's JSON lines."""

    op: ClassVar[str] = ""

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, **dataclasses.asdict(self)}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> "Event":
        data = dict(data)
        return EVENTS[data.pop("op")](**data)

    def apply(self, client: Any, buffer: "Buffer") -> None:
        raise NotImplementedError


@dataclass
class OpenRun(Event):
    """Create the run under its parent — or find it by its tags (``match``), so a
    replayed or repeated open never creates a run twice. The parent's id is read from
    ``parent_run_file`` when the event is applied (unknown while offline)."""

    op: ClassVar[str] = "open"
    experiment_id: str
    name: str
    parent_run_file: str
    params: dict[str, str]
    tags: dict[str, str]
    match: dict[str, str]

    def apply(self, client: Any, buffer: "Buffer") -> None:
        import mlflow

        run_file = Path(self.parent_run_file)
        if not run_file.exists():
            raise RuntimeError(f"{buffer.path}: its parent's run is not created yet")
        parent = run_file.read_text().strip()
        tags = {**self.tags, PARENT_TAG: parent}
        query = " and ".join([f"tags.`{PARENT_TAG}` = '{parent}'"]
                             + [f"tags.`{k}` = '{v}'" for k, v in self.match.items()])
        found = client.search_runs([self.experiment_id], query, max_results=1)
        if found:   # a trial whose driver died comes back to its own run
            buffer.run_id = found[0].info.run_id
            client.update_run(buffer.run_id, status="RUNNING")
            for k, v in tags.items():
                client.set_tag(buffer.run_id, k, v)
        else:
            buffer.run_id = client.create_run(self.experiment_id, run_name=self.name,
                                              tags=tags).info.run_id
            client.log_batch(buffer.run_id, params=[
                mlflow.entities.Param(k, v) for k, v in self.params.items()])
        buffer.run_path.write_text(buffer.run_id)


@dataclass
class SetTag(Event):
    op: ClassVar[str] = "tag"
    key: str
    value: str

    def apply(self, client: Any, buffer: "Buffer") -> None:
        client.set_tag(buffer.require_run(), self.key, self.value)


@dataclass
class LogMetrics(Event):
    op: ClassVar[str] = "metrics"
    step: int
    ts: int
    values: dict[str, float]

    def apply(self, client: Any, buffer: "Buffer") -> None:
        from mlflow.entities import Metric

        client.log_batch(buffer.require_run(), metrics=[
            Metric(k, v, self.ts, self.step) for k, v in self.values.items()])


@dataclass
class LogHistory(Event):
    """Per-epoch metrics in one event: ``steps = [{"step", "values"}, …]``."""

    op: ClassVar[str] = "history"
    ts: int
    steps: list[dict[str, Any]]

    def apply(self, client: Any, buffer: "Buffer") -> None:
        from mlflow.entities import Metric

        metrics = [Metric(k, v, self.ts, step["step"])
                   for step in self.steps for k, v in step["values"].items()]
        run_id = buffer.require_run()
        for i in range(0, len(metrics), 900):    # log_batch takes ≤ 1000 metrics
            client.log_batch(run_id, metrics=metrics[i:i + 900])


@dataclass
class LogArtifact(Event):
    op: ClassVar[str] = "artifact"
    path: str

    def apply(self, client: Any, buffer: "Buffer") -> None:
        run_id = buffer.require_run()
        if Path(self.path).exists():
            client.log_artifact(run_id, self.path)
        else:   # deleted meanwhile: nothing to upload, and no reason to block the rest
            log.warning("%s: artifact %s is gone; skipped", buffer.path.stem, self.path)


@dataclass
class EndRun(Event):
    op: ClassVar[str] = "end"
    status: str

    def apply(self, client: Any, buffer: "Buffer") -> None:
        client.set_terminated(buffer.require_run(), status=self.status)


EVENTS: dict[str, type[Event]] = {
    cls.op: cls for cls in (OpenRun, SetTag, LogMetrics, LogHistory, LogArtifact, EndRun)}


def _now_ms() -> int:
    return int(time.time() * 1000)


class Run:
    """An MLflow run written through its on-disk `Buffer`.

    Every call appends an event to the buffer first and then replays the events not yet
    in the store. When the store cannot be reached (a tracking server that went away)
    the trial goes on and the events wait on disk; `sync` replays them later. One code
    path, online and offline.
    """

    def __init__(self, buffer: "Buffer") -> None:
        self.buffer = buffer

    @property
    def uri(self) -> str:
        return self.buffer.uri

    @property
    def run_id(self) -> str | None:
        """The MLflow run id once the store has been reached (None while offline)."""
        return self.buffer.run_id

    def tag(self, key: str, value: Any) -> None:
        self.buffer.append(SetTag(key, str(value)))

    def metrics(self, values: Mapping[str, float | None], step: int | None = None) -> None:
        self.buffer.append(LogMetrics(step or 0, _now_ms(), {
            k: float(v) for k, v in values.items() if v is not None}))

    def history(self, records: list[tuple[int, Mapping[str, float]]]) -> None:
        """Per-epoch metrics in one event: ``[(epoch, {name: value}), …]``."""
        self.buffer.append(LogHistory(_now_ms(), [
            {"step": int(e), "values": {k: float(v) for k, v in vals.items()}}
            for e, vals in records]))

    def artifact(self, path: str | Path) -> None:
        self.buffer.append(LogArtifact(str(Path(path).resolve())))

    def end(self, status: str) -> None:
        self.buffer.append(EndRun(status))


class TrialRun(Run):
    """The child run of one trial, under the sweep's parent run, buffered in
    ``BUFFER/<trial>.jsonl``. The parent's id is kept in ``BUFFER/_parent.run``."""

    def __init__(self, uri: str, experiment_id: str, parent_run_id: str, name: str,
                 params: Mapping[str, Any], tags: Mapping[str, Any],
                 buffer_dir: str | Path | None = None) -> None:
        import tempfile

        from hpc.atomic import write_text

        folder = Path(buffer_dir) if buffer_dir else Path(tempfile.mkdtemp(prefix="basis-mlf-"))
        folder.mkdir(parents=True, exist_ok=True)
        parent_file = folder / "_parent.run"
        if not parent_file.exists() or parent_file.read_text().strip() != parent_run_id:
            write_text(parent_file, parent_run_id)
        self.key = str(tags.get("trial", name))
        self.experiment_id = experiment_id
        super().__init__(Buffer(folder / f"{self.key}.jsonl", uri))
        self.buffer.append(OpenRun(
            experiment_id, name, str(parent_file), _params(params),
            {"basis.kind": "trial", **{k: str(v) for k, v in tags.items()}},
            {"trial": self.key}))

    def stage(self, kind: str, params: Mapping[str, Any], tags: Mapping[str, Any]
              ) -> "StageRun":
        """A run nested under this trial's run for one of its stages."""
        return StageRun(self, kind, params, tags)


class StageRun(Run):
    """The nested run of one stage of a trial (``init``, ``score``, ``annotate`` …),
    buffered in ``BUFFER/stages/<trial>/<kind>.jsonl``; its parent is the trial's run,
    found when the open is applied (the trial's run id is unknown while offline)."""

    def __init__(self, trial: TrialRun, kind: str, params: Mapping[str, Any],
                 tags: Mapping[str, Any]) -> None:
        folder = trial.buffer.path.parent / "stages" / trial.key
        super().__init__(Buffer(folder / f"{kind}.jsonl", trial.uri))
        self.buffer.append(OpenRun(
            trial.experiment_id, f"{trial.key}/{kind}", str(trial.buffer.run_path),
            _params(params),
            {"basis.kind": "stage", "basis.stage": kind, "trial": trial.key,
             **{k: str(v) for k, v in tags.items()}},
            {"trial": trial.key, "basis.stage": kind}))


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

    def append(self, event: Event) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(event.to_json()) + "\n")
        if time.time() >= self._offline_until:
            self.flush()

    def require_run(self) -> str:
        if self.run_id is None:
            raise RuntimeError(f"{self.path}: events before the run was opened")
        return self.run_id

    def pending(self) -> tuple[list[Event], int]:
        done = int(self.done_path.read_text()) if self.done_path.exists() else 0
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        return [Event.from_json(json.loads(line)) for line in lines[done:]], done

    def flush(self) -> bool:
        """Replay the pending events; False (and a warning) if the store is unreachable."""
        events, done = self.pending()
        if not events:
            return True
        try:
            client = _client(self.uri)
            for event in events:
                event.apply(client, self)
                done += 1
                self.done_path.write_text(str(done))
        except Exception as err:  # connection refused, timeouts, server errors
            self._offline_until = time.time() + RETRY_S
            log.warning("MLflow at %s unreachable (%s); %d event(s) of %s wait in %s for "
                        "`basis sync`", self.uri, type(err).__name__, len(events),
                        self.path.stem, self.path)
            return False
        return True


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


class MlflowObserver(TrialObserver):
    """A trial's MLflow records: its child run (params, tags, per-epoch metrics, final
    metrics, artifacts) and, nested under it, one run per stage (the stage's spec as
    params, its per-epoch history and results, tags stage_dir / slurm_job_id / reused).

    It also fills the outcome's ``mlflow_run_id`` (None while the store is away), so it
    comes before the observers that record the row.
    """

    def __init__(self, uri: str, experiment_id: str, parent_run_id: str,
                 buffer_dir: Path, config_file: Path | None = None) -> None:
        self.uri, self.experiment_id, self.parent_run_id = uri, experiment_id, parent_run_id
        self.buffer_dir, self.config_file = Path(buffer_dir), config_file
        self.run: TrialRun | None = None
        self.nested: dict[str, StageRun] = {}
        self.started: dict[str, int] = {}     # stage kind → how many the trial started
        self.job_ids: list[str] = []
        self.selected_file: Path | None = None
        self.rounds: list[list[int]] = []

    def _trial_run(self) -> TrialRun:
        if self.run is None:
            raise RuntimeError("the trial's MLflow run was not opened (trial_started)")
        return self.run

    def trial_started(self, trial: "TrialConfig", params: dict[str, Any],
                      tags: dict[str, Any]) -> None:
        self.run = TrialRun(self.uri, self.experiment_id, self.parent_run_id, trial.key,
                            params, tags, buffer_dir=self.buffer_dir)

    def stage_started(self, spec: "StageSpec", folder: "StageFolder") -> None:
        # a kind the trial runs again (``study.rounds``) gets a run of its own, named by
        # its round: annotate-r2 (and score-r2, the scores round 2 selects from)
        n = self.started[spec.kind] = self.started.get(spec.kind, 0) + 1
        name = spec.kind if n == 1 else f"{spec.kind}-r{n}"
        self.nested[spec.dirname] = self._trial_run().stage(
            name, spec.flat(), {"stage_dir": folder.path, "code": spec.flat()["code"]})

    def stage_failed(self, spec: "StageSpec", error: "StageFailed") -> None:
        nested = self.nested.pop(spec.dirname)
        nested.tag("error", str(error)[:5000])
        nested.tag("slurm_job_id", ",".join(error.job_ids))
        nested.end(Status.FAILED.mlflow)

    def stage_finished(self, result: "StageResult") -> None:
        from jobs.dag import epoch_values, read_metrics

        nested = self.nested.pop(result.folder.name)
        recs, _ = read_metrics(result.folder.metrics, 0)
        nested.history([(int(r.get("epoch", 0)), epoch_values(r)) for r in recs])
        nested.metrics({k: v for k, v in result.result.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
        nested.tag("reused", str(not result.computed).lower())
        nested.tag("slurm_job_id", ",".join(result.job_ids))
        nested.end(Status.COMPLETED.mlflow)
        self.job_ids.extend(j for j in result.job_ids if j not in self.job_ids)
        self._trial_run().tag("slurm_job_id", ",".join(self.job_ids))

    def epoch(self, record: dict[str, Any]) -> None:
        from jobs.dag import epoch_values

        stage, epoch = record.get("stage", "stage"), int(record.get("epoch", 0))
        self._trial_run().metrics({f"{stage}/{k}": v for k, v in epoch_values(record).items()},
                                  step=epoch)

    def selected(self, trial: "TrialConfig", selected: list[int], round_no: int = 1) -> None:
        """The selected ids, kept in the sweep folder (a buffered event may upload them
        later): every round's so far, and with several rounds, each round's."""
        self.rounds = [*self.rounds[: round_no - 1], list(selected)]
        record: dict[str, Any] = {"trial": trial.key,
                                  "selected": [i for ids in self.rounds for i in ids]}
        if round_no > 1:
            record["rounds"] = self.rounds
        path = self.buffer_dir / "artifacts" / trial.key / "selected_ids.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
        self.selected_file = path

    def trial_finished(self, outcome: TrialOutcome) -> None:
        run = self._trial_run()
        if len(outcome.rounds) > 1:   # AP and budget per selection round, step = round
            for rec in outcome.rounds:
                run.metrics({f"round/{k}": rec[k] for k in ("ap50", "budget_days",
                                                            "n_labelled")}, step=rec["round"])
        if outcome.status is Status.COMPLETED:
            run.metrics(outcome.metrics)
            files = [self.config_file, *outcome.artifacts, self.selected_file]
            for path in files:
                if path is not None and path.exists():
                    run.artifact(path)
        run.end(outcome.status.mlflow)
        outcome.row["mlflow_run_id"] = run.run_id
