"""Real dataset kinds (VOC 2012 + SBD) from config to a stage, on files in the real formats."""
import pytest

from basis.data.check import synth
from jobs.config import ConfigError, SweepConfig
from jobs.data import resolved
from tests.basis.datafix import make_sbd


@pytest.fixture
def roots(tmp_path):
    synth(tmp_path / "voc", n=12, n_val=4, size=64, seed=0, n_classes=20)
    names = [f"2008_{i:06d}" for i in range(5)]
    make_sbd(tmp_path / "sbd", {"train": names[:3], "val": names[3:]})
    return tmp_path / "voc", tmp_path / "sbd"


def _cfg(roots, **study):
    voc, sbd = roots
    return SweepConfig.from_dict({
        "name": "voc", "data": {"kind": "voc_sbd", "voc_root": str(voc), "sbd_root": str(sbd),
                                "image_size": 64},
        "model": {"hidden": 16, "max_steps": 4}, "train": {"epochs": 1, "iou_epochs": 1},
        "study": {"n_init": 4, "N": [8], "beta": [0.5], **study}})


def test_sizes_are_read_from_disk(roots):
    cfg = resolved(_cfg(roots))
    assert (cfg.data.n_pool, cfg.data.n_test, cfg.data.n_additional) == (12, 4, 5)
    assert cfg.model.n_classes == 20


def test_real_data_errors_come_before_submission(roots, tmp_path):
    with pytest.raises(ConfigError, match=r"study.N=40 must be in \(study.n_init=4, "
                                          r"data.n_pool=12\]"):
        resolved(_cfg(roots, N=[40]))
    with pytest.raises(ConfigError, match="data.sbd_root=.*does not exist"):
        SweepConfig.from_dict({"name": "x", "data": {
            "kind": "voc_sbd", "voc_root": str(roots[0]), "sbd_root": str(tmp_path / "no")}})
    with pytest.raises(ConfigError, match="data.voc_root is required"):
        SweepConfig.from_dict({"name": "x", "data": {"kind": "voc_sbd"}})


@pytest.mark.slow
def test_init_stage_runs_on_voc_files(roots, tmp_path):
    import pyarrow.parquet as pq

    from jobs.config import TrialConfig
    from jobs.specs import ScoreSpec
    from jobs.stages import job_for
    from jobs.trial import init_spec

    cfg = resolved(_cfg(roots))
    spec = init_spec(cfg, TrialConfig(8, 0.5, 0, "predicted", 4))
    init, score = spec.folder(tmp_path), ScoreSpec(spec).folder(tmp_path)
    init.path.mkdir(parents=True)
    score.path.mkdir(parents=True)
    result = job_for(spec, init)()
    assert init.done.exists() and 0.0 <= result["ap50"] <= 1.0
    assert init.model.exists()
    job_for(ScoreSpec(spec), score)()
    scores = pq.read_table(score.image_scores).to_pandas()
    assert len(scores) == 12 and int(scores["in_init"].sum()) == 4
    assert scores["image_id"].min() >= 0 and (scores["n_objects"] >= 1).all()


def test_a_corrupt_image_stops_the_sweep_before_submission(roots, tmp_path):
    voc, _ = roots
    png = sorted((voc / "SegmentationObject").glob("*.png"))[0]
    png.write_bytes(png.read_bytes()[:40])          # truncated
    with pytest.raises(ConfigError, match=f"bad image.*{png.name}"):
        resolved(_cfg(roots))
    cfg = SweepConfig.from_dict({**_cfg(roots).to_dict(), "data": {
        **_cfg(roots).to_dict()["data"], "check_images": False}})
    assert resolved(cfg).data.n_pool == 12         # sizes come from the file lists
