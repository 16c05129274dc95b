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


def flaky(d: Path, failures: int):
    """A stage job failing its first ``failures`` attempts (counted in a file)."""
    def run():
        count = d / "attempts"
        n = int(count.read_text()) + 1 if count.exists() else 1
        count.write_text(str(n))
        with open(d / dag.METRICS, "a") as fh:
            fh.write(json.dumps({"stage": "x", "epoch": n, "loss": 1.0 / n}) + "\n")
        if n <= failures:
            raise ValueError(f"flaky node, attempt {n}")
        (d / dag.RESULT).write_text(json.dumps({"attempts": n}))
        (d / dag.DONE).write_text("")
    return run


def test_retries_resubmit_a_failed_job_and_keep_its_epochs(tmp_path):
    FakeExecutor.submitted = 0
    seen = []
    got = dag.ensure(tmp_path, "annotate", {"s": 0}, lambda d: flaky(d, 2), FakeExecutor,
                     seen.append, poll_s=0.01, retries=2)
    assert got.computed and got.result == {"attempts": 3}
    assert dag.job_ids(got.dir) == ["1", "2", "3"]
    assert [r["epoch"] for r in seen] == [1, 2, 3]     # a retry streams on, not from 1
    with pytest.raises(dag.StageFailed) as err:        # more failures than retries
        dag.ensure(tmp_path, "annotate", {"s": 1}, lambda d: flaky(d, 5), FakeExecutor,
                   poll_s=0.01, retries=1)
    assert "attempt 2" in str(err.value) and "after 2 attempts" in str(err.value)
    assert len(err.value.job_ids) == 2


def test_submit_array_skips_done_and_single_stages(tmp_path):
    class BatchExecutor(FakeExecutor):
        batches = 0

        def batch(self):
            import contextlib

            BatchExecutor.batches += 1
            return contextlib.nullcontext()

    FakeExecutor.submitted = 0
    specs = [{"seed": s} for s in range(3)]
    dag.ensure(tmp_path, "init", specs[0], lambda d: writer(d, 0), FakeExecutor)
    ids = dag.submit_array(tmp_path, "init", specs + [specs[1]],
                           lambda spec, d: writer(d, spec["seed"]), BatchExecutor)
    assert ids == ["2", "3"] and BatchExecutor.batches == 1    # seed 0 was done already
    for spec, job_id in zip(specs[1:], ids):
        assert dag.job_ids(dag.stage_dir(tmp_path, "init", spec)) == [job_id]
    assert dag.submit_array(tmp_path, "init", specs, lambda spec, d: writer(d, 0),
                            BatchExecutor) == []                # all done now
