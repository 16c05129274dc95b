import pyarrow.parquet as pq

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
    row = run_trial({"N": 40, "seed": 0, "arm": {"mode": "predicted", "beta": 0.3}}, ctx,
                    reports.append)
    assert row["status"] == "FAILED" and "study.n_init=0" in row["error"]
    df = read(tmp_path, "trials")
    assert df["trial"].tolist() == ["predicted-b0.30-N40-s0"]
    assert df["status"].tolist() == ["FAILED"] and reports[-1]["status"] == "FAILED"
