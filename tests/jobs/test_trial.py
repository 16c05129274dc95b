import pyarrow.parquet as pq
import pytest

from analysis.schema import to_table
from jobs.config import TrialConfig
from jobs.trial import select_images


def _scores(tmp_path):
    rows = [{"image_id": i, "seed": 0, "score_pred": s, "iou_true": t, "n_objects": 1,
             "mean_object_area": 0.1, "in_init": i < 2}
            for i, (s, t) in enumerate([(0.5, 0.5), (0.5, 0.5), (0.1, 0.9), (0.32, 0.2),
                                        (0.58, 0.6), (0.9, 0.31), (0.27, 0.0)])]
    pq.write_table(to_table("image_scores", rows), tmp_path / "image_scores.parquet")


def test_select_images_by_mode(tmp_path):
    _scores(tmp_path)
    t = TrialConfig(N=4, beta=0.3, seed=0, mode="predicted", n_init=2)
    init, chosen = select_images(tmp_path, t)
    assert init == [0, 1]
    assert chosen == [3, 6]            # predicted 0.32 and 0.27 are closest to 0.3
    _, chosen = select_images(tmp_path, TrialConfig(4, 0.3, 0, "oracle", 2))
    assert chosen == [5, 3]            # true 0.31 then 0.2 (0.0 and 0.6 are farther)
    _, r1 = select_images(tmp_path, TrialConfig(4, None, 0, "random", 2))
    _, r2 = select_images(tmp_path, TrialConfig(4, None, 0, "random", 2))
    assert r1 == r2 and len(set(r1)) == 2 and not set(r1) & {0, 1}


def test_a_trial_that_cannot_even_start_is_recorded_failed(tmp_path):
    from analysis.io import read
    from hpc.profiles import ClusterProfile
    from jobs.config import SweepConfig
    from jobs.trial import SweepContext, run_trial

    cfg = SweepConfig.load("configs/demo.yaml").to_dict()
    cfg["study"]["n_init"] = 0          # refused when the trial reads its config
    ctx = SweepContext(str(tmp_path), cfg, ClusterProfile.load("local"),
                       f"sqlite:///{tmp_path / 'm.db'}", "0", "p")
    reports = []
    trial = TrialConfig(N=40, beta=0.3, seed=0, mode="predicted", n_init=20)
    row = run_trial(trial.to_flat_dict(), ctx, reports.append)
    assert row["status"] == "FAILED" and "study.n_init=0" in row["error"]
    df = read(tmp_path, "trials")
    assert df["trial"].tolist() == ["predicted-b0.30-N40-s0"]
    assert df["status"].tolist() == ["FAILED"] and reports[-1]["status"] == "FAILED"


class _Log:
    """An observer that writes down what it was told."""

    def __init__(self, seen):
        self.seen = seen

    def __getattr__(self, event):
        def note(*args):
            self.seen.append((event, *args))
        return note


def test_runner_tells_its_observers_in_order(tmp_path, monkeypatch):
    import dataclasses
    import json

    import pytest

    from analysis.schema import Status
    from hpc.profiles import ClusterProfile
    from jobs.config import SweepConfig
    from jobs.dag import StageFailed
    from jobs.events import TrialOutcome
    from jobs.trial import SweepContext, TrialRunner
    from jobs import trial as trial_mod
    from tests.jobs.test_dag import FakeExecutor, ToySpec

    @dataclasses.dataclass(frozen=True)
    class Toy(ToySpec):
        kind = "init"          # a kind the profile knows (its stage resources apply)

    def job(spec, folder):
        def run():
            folder.metrics.write_text(json.dumps({"stage": "toy", "epoch": 1, "loss": 0.5})
                                      + "\n")
            if spec.value < 0:
                raise ValueError("negative value")
            folder.result.write_text(json.dumps({"value": spec.value}))
            folder.done.write_text("")
        return run

    made = []
    monkeypatch.setattr(trial_mod, "make_executor", lambda profile, folder, name, stage:
                        made.append((name, stage)) or FakeExecutor(folder))
    profile = ClusterProfile.load("local")
    ctx = SweepContext(str(tmp_path), {}, profile, "sqlite:///x", "0", "p")
    cfg = SweepConfig.load("configs/demo.yaml")
    trial = cfg.trials()[0]
    seen: list = []
    first, second = _Log(seen), _Log([])
    runner = TrialRunner(ctx, cfg, trial, [first, second], job=job)
    runner.start({"N": trial.N}, {"trial": trial.key})
    a = runner.stage(Toy(value=3))
    again = runner.stage(Toy(value=3))
    with pytest.raises(StageFailed):
        runner.stage(Toy(value=-1))
    outcome = TrialOutcome(trial, Status.FAILED, {"trial": trial.key})
    runner.finish(outcome)
    events = [e[0] for e in seen]
    assert events == ["trial_started", "stage_started", "epoch", "stage_finished",
                      "stage_started", "stage_finished",       # found done: no epochs
                      "stage_started", "epoch", "stage_failed",  # its epochs still stream
                      "trial_finished"]
    assert seen[2][1] == {"stage": "toy", "epoch": 1, "loss": 0.5}
    assert a.computed and not again.computed and a.result == {"value": 3}
    assert second.seen == seen                         # every observer, the same events
    assert seen[-1][1].row["slurm_job_ids"] == ",".join(runner.job_ids)
    assert len(runner.job_ids) == 2                    # the computed and the failed stage
    assert made == [(f"basis-{cfg.name}-init", "init")] * 2   # named, with its resources


def test_every_stage_kind_is_one_a_profile_can_set_resources_for():
    from hpc.profiles import STAGE_KINDS
    from jobs.stages import JOBS

    assert {spec.kind for spec in JOBS} <= set(STAGE_KINDS)


def test_select_images_by_baseline_strategy(tmp_path):
    import numpy as np

    from analysis.schema import to_table as table_of

    rows = [{"image_id": i, "seed": 0, "score_pred": s, "iou_true": 0.5, "n_objects": 1,
             "mean_object_area": 0.1, "in_init": i < 2, "entropy": e,
             "least_confidence": e / 2, "mask_entropy": 0.1 * i}
            for i, (s, e) in enumerate([(0.5, 0.0), (0.5, 0.0), (0.1, 0.9), (0.32, 0.2),
                                        (0.58, 1.3), (0.9, 0.31), (0.27, 0.0)])]
    pq.write_table(table_of("image_scores", rows), tmp_path / "image_scores.parquet")
    feats = np.array([[0, 0], [1, 0], [9, 9], [1, 1], [0, -8], [2, 0], [0, 1]], np.float32)
    with open(tmp_path / "features.npz", "wb") as fh:
        np.savez(fh, image_id=np.arange(7), features=feats)

    def chosen(mode, beta=None):
        init, ids = select_images(tmp_path, TrialConfig(4, beta, 0, mode, 2))
        assert init == [0, 1] and len(ids) == 2 and not set(ids) & {0, 1}
        return ids

    assert chosen("lowest") == [2, 6] and chosen("highest") == [5, 4]
    assert chosen("entropy") == [4, 2] and chosen("least_confidence") == [4, 2]
    assert chosen("mask_entropy") == [6, 5]
    assert chosen("coreset") == [2, 4]           # (9, 9) first, then (0, -8)
    assert set(chosen("band", 0.3)) == {3, 6}     # 0.32 and 0.27 within 0.3 ± 0.1
    assert len(set(chosen("stratified"))) == 2
    (tmp_path / "features.npz").unlink()          # a score stage of older code
    with pytest.raises(ValueError, match="without --reuse-stale"):
        chosen("coreset")
