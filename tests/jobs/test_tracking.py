"""MLflow records on a real sqlite store."""
from jobs import tracking


def test_parent_child_runs_and_one_run_per_trial(tmp_path):
    uri = tracking.default_uri(tmp_path)
    exp, parent = tracking.open_sweep(uri, "basis/t", {"a": 1}, artifact_root=tmp_path / "art")
    # reopening the sweep keeps its experiment and parent run
    assert tracking.open_sweep(uri, "basis/t", {"a": 1}, parent_run_id=parent) == (exp, parent)
    tags = {"N": 40, "beta": 0.3, "seed": 0, "mode": "predicted", "trial": "k1"}
    first = tracking.TrialRun(uri, exp, parent, "k1", {"N": 40}, tags)
    first.metrics({"loss": 0.5}, step=1)
    # the driver died; the resumed trial finds the same run instead of a second one
    again = tracking.TrialRun(uri, exp, parent, "k1", {"N": 40}, {**tags, "tune_trial_id": "x"})
    assert again.run_id == first.run_id
    again.end("FINISHED")
    other = tracking.TrialRun(uri, exp, parent, "k2", {"N": 80}, {**tags, "trial": "k2"})
    assert other.run_id != first.run_id
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent}'")
    assert sorted(r.data.tags["trial"] for r in runs) == ["k1", "k2"]
    k1 = client.get_run(first.run_id)
    assert k1.info.status == "FINISHED" and k1.data.tags["tune_trial_id"] == "x"
    assert k1.data.metrics["loss"] == 0.5 and k1.data.params["N"] == "40"


def test_events_round_trip_through_the_buffer_format():
    import json

    from jobs.tracking import (EVENTS, EndRun, Event, LogArtifact, LogHistory, LogMetrics,
                               OpenRun, SetTag)

    events = [OpenRun("1", "k", "/p.run", {"a": "1"}, {"t": "v"}, {"trial": "k"}),
              SetTag("k", "v"), LogMetrics(3, 17, {"loss": 0.5}),
              LogHistory(17, [{"step": 1, "values": {"loss": 0.5}}]),
              LogArtifact("/a.png"), EndRun("FINISHED")]
    assert sorted(EVENTS) == sorted(e.op for e in events)
    for e in events:
        line = json.dumps(e.to_json())
        assert json.loads(line)["op"] == e.op
        assert Event.from_json(json.loads(line)) == e
