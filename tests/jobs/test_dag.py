"""The stage DAG's bookkeeping with a fake executor (the real ones run in the e2e tests)."""
import json
import threading
from pathlib import Path

import pytest

from jobs import dag


class FakeJob:
    def __init__(self, fn, job_id, folder):
        self.fn, self.job_id, self._tasks = fn, job_id, (0,)
        self.paths = type("P", (), {"stderr": Path(folder) / f"{job_id}_0_log.err"})()
        self._error = None
        try:
            fn()
        except Exception as err:
            self._error = err

    def done(self):
        return True

    def results(self):
        if self._error is not None:
            raise RuntimeError(f"job failed\n\nTraceback ...\nValueError: {self._error}\n"
                               f"\nlogs at:\n  - {self.paths.stderr}")
        return [None]


class FakeExecutor:
    submitted = 0
    lock = threading.Lock()

    def __init__(self, folder):
        self.folder = folder

    def submit(self, fn):
        with FakeExecutor.lock:
            FakeExecutor.submitted += 1
            return FakeJob(fn, str(FakeExecutor.submitted), self.folder)


def writer(d: Path, value, fail=False):
    def run():
        (d / dag.METRICS).write_text(json.dumps({"stage": "x", "epoch": 1, "loss": 0.5}) + "\n")
        if fail:
            raise ValueError("bad input in stage")
        (d / dag.RESULT).write_text(json.dumps({"value": value}))
        (d / dag.DONE).write_text("")
    return run


def test_stage_is_computed_once_and_shared(tmp_path):
    FakeExecutor.submitted = 0
    seen = []
    results = []

    def one():
        results.append(dag.ensure(tmp_path, "init", {"seed": 0}, lambda d: writer(d, 7),
                                  FakeExecutor, seen.append, poll_s=0.01))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert FakeExecutor.submitted == 1
    assert [r.result for r in results] == [{"value": 7}] * 4
    assert sum(r.computed for r in results) == 1
    assert seen == [{"stage": "x", "epoch": 1, "loss": 0.5}]
    assert dag.job_ids(results[0].dir) == ["1"]
    # another config is another stage
    other = dag.ensure(tmp_path, "init", {"seed": 1}, lambda d: writer(d, 8), FakeExecutor)
    assert other.dir != results[0].dir and FakeExecutor.submitted == 2


def test_failed_stage_names_its_log_and_is_retried(tmp_path):
    FakeExecutor.submitted = 0
    with pytest.raises(dag.StageFailed) as err:
        dag.ensure(tmp_path, "init", {"s": 0}, lambda d: writer(d, 1, fail=True), FakeExecutor)
    assert "bad input in stage" in str(err.value)
    assert err.value.log_path.endswith("1_0_log.err") and err.value.job_ids == ["1"]
    ok = dag.ensure(tmp_path, "init", {"s": 0}, lambda d: writer(d, 1), FakeExecutor)
    assert ok.computed and dag.job_ids(ok.dir) == ["1", "2"]


def test_read_metrics_keeps_a_partial_line_for_later(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"epoch": 1}\n{"epo')
    recs, off = dag.read_metrics(path, 0)
    assert recs == [{"epoch": 1}]
    with open(path, "a") as fh:
        fh.write('ch": 2}\n')
    recs, _ = dag.read_metrics(path, off)
    assert recs == [{"epoch": 2}]
