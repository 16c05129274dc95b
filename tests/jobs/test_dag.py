"""The stage DAG's bookkeeping with a fake executor (the real ones run in the e2e tests)."""
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from jobs import dag
from jobs.specs import StageFolder, StageSpec


@dataclass(frozen=True)
class ToySpec(StageSpec):
    kind: ClassVar[str] = "toy"
    seed: int = 0
    value: int = 0


def spec(**kw):
    return ToySpec(**kw)


class FakeJob:
    def __init__(self, fn, job_id, folder):
        self.fn, self.job_id, self.num_tasks = fn, job_id, 1
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


def writer(f: StageFolder, value, fail=False):
    def run():
        f.metrics.write_text(json.dumps({"stage": "x", "epoch": 1, "loss": 0.5}) + "\n")
        if fail:
            raise ValueError("bad input in stage")
        f.result.write_text(json.dumps({"value": value}))
        f.done.write_text("")
    return run


def test_stage_is_computed_once_and_shared(tmp_path):
    FakeExecutor.submitted = 0
    seen = []
    results = []

    def one():
        results.append(dag.ensure(tmp_path, spec(seed=0), lambda s, f: writer(f, 7),
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
    assert dag.job_ids(results[0].folder) == ["1"]
    sub = dag.submissions(results[0].folder)[0]
    assert (sub.job_id, sub.tasks, sub.executor) == ("1", 1, "local")
    # another config is another stage
    other = dag.ensure(tmp_path, spec(seed=1), lambda s, f: writer(f, 8), FakeExecutor)
    assert other.dir != results[0].dir and FakeExecutor.submitted == 2


def test_failed_stage_names_its_log_and_is_retried(tmp_path):
    FakeExecutor.submitted = 0
    with pytest.raises(dag.StageFailed) as err:
        dag.ensure(tmp_path, spec(), lambda s, f: writer(f, 1, fail=True), FakeExecutor)
    assert "bad input in stage" in str(err.value)
    assert err.value.log_path.endswith("1_0_log.err") and err.value.job_ids == ["1"]
    ok = dag.ensure(tmp_path, spec(), lambda s, f: writer(f, 1), FakeExecutor)
    assert ok.computed and dag.job_ids(ok.folder) == ["1", "2"]


def test_read_metrics_keeps_a_partial_line_for_later(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"epoch": 1}\n{"epo')
    recs, off = dag.read_metrics(path, 0)
    assert recs == [{"epoch": 1}]
    with open(path, "a") as fh:
        fh.write('ch": 2}\n')
    recs, _ = dag.read_metrics(path, off)
    assert recs == [{"epoch": 2}]


def flaky(f: StageFolder, failures: int):
    """A stage job failing its first ``failures`` attempts (counted in a file)."""
    def run():
        count = f.path / "attempts"
        n = int(count.read_text()) + 1 if count.exists() else 1
        count.write_text(str(n))
        with open(f.metrics, "a") as fh:
            fh.write(json.dumps({"stage": "x", "epoch": n, "loss": 1.0 / n}) + "\n")
        if n <= failures:
            raise ValueError(f"flaky node, attempt {n}")
        f.result.write_text(json.dumps({"attempts": n}))
        f.done.write_text("")
    return run


def test_retries_resubmit_a_failed_job_and_keep_its_epochs(tmp_path):
    FakeExecutor.submitted = 0
    seen = []
    got = dag.ensure(tmp_path, spec(), lambda s, f: flaky(f, 2), FakeExecutor,
                     seen.append, poll_s=0.01, retries=2)
    assert got.computed and got.result == {"attempts": 3}
    assert dag.job_ids(got.folder) == ["1", "2", "3"]
    assert [r["epoch"] for r in seen] == [1, 2, 3]     # a retry streams on, not from 1
    with pytest.raises(dag.StageFailed) as err:        # more failures than retries
        dag.ensure(tmp_path, spec(seed=1), lambda s, f: flaky(f, 5), FakeExecutor,
                   poll_s=0.01, retries=1)
    assert "attempt 2" in str(err.value) and "after 2 attempts" in str(err.value)
    assert len(err.value.job_ids) == 2


def test_submit_ahead_skips_done_stages_and_submits_a_single_one_plain(tmp_path):
    class BatchExecutor(FakeExecutor):
        batches = 0

        def batch(self):
            import contextlib

            BatchExecutor.batches += 1
            return contextlib.nullcontext()

    FakeExecutor.submitted = 0
    specs = [spec(seed=s) for s in range(3)]
    dag.ensure(tmp_path, specs[0], lambda s, f: writer(f, 0), FakeExecutor)
    ids = dag.submit_ahead(tmp_path, specs + [specs[1]],
                           lambda s, f: writer(f, s.seed), BatchExecutor)
    assert ids == ["2", "3"] and BatchExecutor.batches == 1    # seed 0 was done already
    for sp, job_id in zip(specs[1:], ids):
        assert dag.job_ids(sp.folder(tmp_path)) == [job_id]
        assert dag.submissions(sp.folder(tmp_path))[0].array is not None
    assert dag.submit_ahead(tmp_path, specs, lambda s, f: writer(f, 0),
                            BatchExecutor) == []                # all done now
    # a single stage goes ahead as a plain job, not as an array of one
    lone = spec(seed=7)
    ids = dag.submit_ahead(tmp_path, specs + [lone], lambda s, f: writer(f, s.seed),
                           BatchExecutor)
    assert ids == dag.job_ids(lone.folder(tmp_path)) and len(ids) == 1
    assert BatchExecutor.batches == 1 and dag.submissions(lone.folder(tmp_path))[0].array is None


def test_spec_address_holds_its_config_and_the_code(tmp_path, monkeypatch):
    from jobs import specs

    a, b = spec(seed=0), spec(seed=1)
    assert a.address == spec(seed=0).address and a.address != b.address
    assert a.folder(tmp_path).path == tmp_path / "stages" / f"toy-{a.address}"
    before = a.address
    monkeypatch.setattr(specs, "code_fingerprint", lambda: "other-code")
    assert a.address != before                  # a code change is a new stage


def test_nested_specs_address_their_inputs(tmp_path):
    from jobs.config import SweepConfig
    from jobs.specs import ScoreSpec
    from jobs.trial import init_spec

    cfg = SweepConfig.load("configs/demo.yaml")
    t0, t1 = [t for t in cfg.trials() if t.N == cfg.study.N[0]][:1] + [
        t for t in cfg.trials() if t.N == cfg.study.N[-1]][:1]
    i0, i1 = init_spec(cfg, t0), init_spec(cfg, t1)
    assert i0 == i1                             # same seed: one init stage for every N
    score = ScoreSpec(i0)
    assert score.inputs() == {"init": i0}
    assert score.flat()["init"] == i0.dirname
    assert score.folder(tmp_path).of(i0) == i0.folder(tmp_path)


def _compute(tmp_path, s):
    return dag.ensure(tmp_path, s, lambda sp, f: writer(f, sp.value), FakeExecutor)


def test_a_stage_of_other_code_is_stale_and_reused_only_when_asked(tmp_path, monkeypatch):
    from jobs import specs

    monkeypatch.setattr(specs, "_REUSE", {})
    a = spec(seed=7, value=3)
    old = _compute(tmp_path, a).folder
    assert json.loads(old.config.read_text())["code"] == specs.code_fingerprint()
    assert specs.StageIndex(tmp_path / "stages").stale(a) is None   # done: not stale
    monkeypatch.setattr(specs, "code_fingerprint", lambda: "new-code")
    index = specs.StageIndex(tmp_path / "stages")
    assert index.stale(a) == old and old.read_code() != "new-code"
    assert index.stale(spec(seed=8, value=3)) is None                # another spec
    assert a.folder(tmp_path) != old                                  # recomputed …
    specs.reuse_stale(tmp_path)
    assert a.folder(tmp_path) == old                                  # … unless reused
    assert dag.ensure(tmp_path, a, lambda sp, f: writer(f, -1), FakeExecutor).result == {
        "value": 3}
    monkeypatch.setattr(specs, "_REUSE", {})
    fresh = _compute(tmp_path, a)
    assert fresh.computed and fresh.folder != old and fresh.folder.read_code() == "new-code"
    assert specs.StageIndex(tmp_path / "stages").stale(a) is None     # done again


def test_clean_removes_only_the_checkpoints_of_done_stages(tmp_path):
    import yaml

    from jobs.ops import clean

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"name": "x"}))
    (tmp_path / "sweep.json").write_text("{}")
    done = _compute(tmp_path, spec(seed=1)).folder
    running = spec(seed=2).folder(tmp_path)
    running.path.mkdir(parents=True)
    for f in (done, running):
        f.ckpt.write_bytes(b"x" * 1000)
        f.model.write_bytes(b"w")
    (done.path / ".ckpt.pt.abc.tmp").write_bytes(b"y" * 24)
    listed = clean(tmp_path, dry_run=True)
    assert sorted(p.name for p, _ in listed.removed) == [".ckpt.pt.abc.tmp", "ckpt.pt"]
    assert listed.bytes == 1024 and done.ckpt.exists()
    assert "would remove 2 file(s), 1.0 KiB would be freed" in listed.lines()[-1]
    cleaned = clean(tmp_path)
    assert cleaned.bytes == 1024 and not done.ckpt.exists() and done.model.exists()
    assert running.ckpt.exists() and done.result.exists() and done.metrics.exists()
    assert clean(tmp_path).removed == []


def test_every_stage_that_trains_a_fresh_network_reads_the_pretrain_stage():
    """With ``encoder_weights: pretrain`` the stages that build a network from scratch
    (init, annotate, segment, control) have the pretrain stage among their inputs, so
    the driver resolves its folder for them; the inference stages do not need it."""
    import dataclasses

    from jobs.config import SweepConfig
    from jobs.specs import (AnnotateSpec, ControlSpec, PretrainSpec, PseudoSpec, ScoreSpec,
                            SegmentSpec)
    from jobs.trial import init_spec

    raw = SweepConfig.load("configs/synthetic/study.yaml")
    assert raw.uses_pretrain()
    init = init_spec(raw, raw.trials()[0])
    pre = init.recipe.pretrain
    assert isinstance(pre, PretrainSpec)
    annotate = AnnotateSpec(init.recipe, (1, 2, 3))
    pseudo = PseudoSpec(annotate)
    specs = {"init": init, "annotate": annotate,
             "segment": SegmentSpec(pseudo, 4), "control": ControlSpec(init.recipe, (1, 2))}
    for name, spec in specs.items():
        assert spec.inputs().get("pretrain") == pre, name
    for spec in (ScoreSpec(init), pseudo):
        assert "pretrain" not in spec.inputs()
    # without pretraining, nothing reads one
    plain = dataclasses.replace(init, recipe=dataclasses.replace(init.recipe, pretrain=None))
    assert "pretrain" not in SegmentSpec(PseudoSpec(AnnotateSpec(plain.recipe, (1,))), 2
                                         ).inputs()


def test_a_failed_job_names_the_error_of_the_peer_that_died(tmp_path):
    """Task 0 of a DDP job only sees "Connection closed by peer"; the stage's error
    quotes the other tasks' own last error lines and their logs."""
    (tmp_path / "7_0_log.err").write_text("RuntimeError: Connection closed by peer\n")
    (tmp_path / "7_1_log.err").write_text(
        "[rank1]: Traceback (most recent call last):\n[rank1]:   File x\n"
        "[rank1]: ValueError: cost matrix is infeasible\n")
    (tmp_path / "7_2_log.err").write_text("epoch 1/3 loss=1.0\n")        # nothing wrong
    (tmp_path / "7_3_log.err").write_text("srun: error: task 3: Killed\n")
    (tmp_path / "17_1_log.err").write_text("KeyError: 'another job'\n")
    text = dag._peer_errors(tmp_path / "7_0_log.err", "7")
    assert "task 1: ValueError: cost matrix is infeasible" in text
    assert str(tmp_path / "7_1_log.err") in text
    assert "task 3: srun: error: task 3: Killed" in text
    assert "task 2" not in text and "another job" not in text and "task 0" not in text
    (tmp_path / "7_1_log.err").write_text("all well\n")
    (tmp_path / "7_3_log.err").unlink()
    assert dag._peer_errors(tmp_path / "7_0_log.err", "7") == ""
