"""`basis data check` and `basis data synth` through `jobs.cli.main`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from basis.data import SyntheticConfig, VOCInstances, write_coco
from basis.data.check import check, detect_format, render_check, synth
from basis.data.splits import synthetic_splits
from jobs.cli import main
from tests.basis.datafix import make_sbd, make_voc


def test_synth_then_voc_reader_round_trip(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["-q", "data", "synth", str(out), "--n", "8", "--n-val", "3", "--size", "32",
                 "--seed", "4"]) == 0
    assert "basis data check" in capsys.readouterr().out
    pool, test = synthetic_splits(SyntheticConfig(image_size=32), 4, 8, 3)
    for split, ref in (("train", pool), ("val", test)):
        back = VOCInstances(out, split)
        assert back.ids == ref.ids
        for i in range(len(ref)):
            a, b = ref[i], back[i]
            assert torch.equal(a.masks, b.masks) and torch.equal(a.labels, b.labels)
            assert torch.equal(b.ignore, a.ignore & ~a.masks.any(0))
    assert detect_format(out) == "synthetic"


def test_check_statistics_match_the_generator(tmp_path, capsys):
    cfg = SyntheticConfig(image_size=32)
    synth(tmp_path / "syn", 60, size=32, seed=2)
    r = check(tmp_path / "syn")
    pool, _ = synthetic_splits(cfg, 2, 60, 0)
    n_obj = np.array([pool[i].n_objects for i in range(60)])
    n_cls = np.array([len(pool[i].weak) for i in range(60)])
    assert r["n_images"] == 60 and r["n_errors"] == 0
    assert r["objects_per_image"] == pytest.approx(n_obj.mean())  # exactly what was drawn
    assert r["classes_per_image"] == pytest.approx(n_cls.mean())
    # and near the configured targets (sampling error of 60 images, small truncation bias)
    assert abs(r["objects_per_image"] - cfg.mean_objects) < 0.6
    assert abs(r["classes_per_image"] - cfg.mean_classes) < 0.35
    assert sum(c for *_, c in r["area_hist"]) == r["n_objects"]
    assert main(["data", "check", str(tmp_path / "syn")]) == 0
    text = capsys.readouterr().out
    assert "objects/image" in text and "generator targets" in text and "no errors" in text
    assert "class" in text and "%" in text


def test_check_detects_every_format(tmp_path):
    voc = make_voc(tmp_path / "VOCdevkit" / "VOC2012", {"train": ["2007_000001"],
                                                        "val": ["2007_000002"]})
    sbd = make_sbd(tmp_path / "sbd", {"train": ["2008_000001"], "val": ["2008_000002"]})
    src = VOCInstances(voc, "train")
    coco = write_coco([src[0]], tmp_path / "coco" / "a.json", list(src.class_names),
                      image_dir=tmp_path / "coco" / "img")
    for path, fmt, n in ((tmp_path / "VOCdevkit", "voc", 2), (sbd, "sbd", 2),
                         (coco, "coco", 1)):
        r = check(path)
        assert (r["format"], r["n_images"], r["n_errors"]) == (fmt, n, 0)
        assert r["objects_per_image"] == 2.0 and r["classes_per_image"] == 2.0
        assert "person 1" in render_check(r) or "person" in json.dumps(r["per_class"])


def test_check_reports_bad_files_by_name(tmp_path, capsys):
    voc = make_voc(tmp_path / "voc", {"train": ["2007_000001", "2007_000002"]})
    bad = voc / "SegmentationClass" / "2007_000002.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    assert main(["data", "check", str(voc)]) == 1
    out = capsys.readouterr().out
    assert "ERRORS: 1 image(s) failed" in out and str(bad) in out
    assert "images: 1" in out


def test_check_structural_errors_exit_2(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    (tmp_path / "odd").mkdir()
    assert main(["data", "check", str(tmp_path / "odd")]) == 2
    assert "--format" in capsys.readouterr().err
    voc = make_voc(tmp_path / "voc", {"train": ["x_1"]})
    (voc / "ImageSets" / "Segmentation" / "train.txt").unlink()
    assert main(["data", "check", str(voc), "--format", "voc"]) == 2
    assert "no split files" in capsys.readouterr().err


def test_check_reports_count_distributions_and_void(tmp_path, capsys):
    cfg = SyntheticConfig(image_size=32, version=2)
    synth(tmp_path / "v2", 80, size=32, seed=5, version=2)
    r = check(tmp_path / "v2")
    pool, _ = synthetic_splits(cfg, 5, 80, 0)
    samples = [pool[i] for i in range(80)]
    n_obj = np.array([s.n_objects for s in samples])
    n_cls = np.array([len(s.weak) for s in samples])
    assert r["objects_per_image"] == pytest.approx(n_obj.mean())
    assert r["classes_per_image"] == pytest.approx(n_cls.mean())
    assert r["objects_hist"] == {str(k): int((n_obj == k).sum()) for k in np.unique(n_obj)}
    assert r["classes_hist"] == {str(k): int((n_cls == k).sum()) for k in np.unique(n_cls)}
    # the void outside the objects survives the VOC round trip (void inside them does not)
    void = sum(int((s.ignore & ~s.masks.any(0)).sum()) for s in samples)
    union = sum(int((s.ignore | s.masks.any(0)).sum()) for s in samples)
    assert r["void"]["of_labelled"] == pytest.approx(void / union)
    assert r["void"]["in_objects"] == 0.0
    assert 0.0 < r["void"]["of_image"] < 0.1
    assert r["generator"]["config"]["version"] == 2
    assert main(["data", "check", str(tmp_path / "v2")]) == 0
    text = capsys.readouterr().out
    assert "images with K objects:" in text and "images with C classes:" in text
    assert "void (255):" in text and "version 2" in text


def test_count_hist_caps_and_skips_empty_bins():
    from basis.data.check import count_hist

    assert count_hist([1, 1, 3, 12, 10]) == {"1": 2, "3": 1, "10+": 2}
    assert count_hist([]) == {}
