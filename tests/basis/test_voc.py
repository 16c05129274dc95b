"""VOC 2012 reader and writer on palette-PNG fixtures written here."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from basis.data import DataError, SyntheticConfig, VOCInstances, write_voc
from basis.data.imageio import write_index_png
from basis.data.splits import synthetic_splits
from tests.basis.datafix import H, W, make_voc, voc_maps


@pytest.fixture
def voc(tmp_path):
    return make_voc(tmp_path / "VOCdevkit" / "VOC2012",
                    {"train": ["2007_000032", "2007_000039"], "val": ["2008_000002"]})


def test_reads_instances_classes_and_void(voc):
    ds = VOCInstances(voc.parent, "train")  # VOCdevkit is accepted too
    assert ds.ids == [2007000032, 2007000039] and len(ds) == 2
    s = ds[0]
    obj, cls = voc_maps()
    assert s.image.shape == (3, H, W) and s.image.dtype == torch.float32
    assert s.masks.dtype == torch.bool and s.masks.shape == (2, H, W)
    assert torch.equal(s.masks[0], torch.from_numpy(obj == 1))
    assert torch.equal(s.masks[1], torch.from_numpy(obj == 2))
    assert s.labels.tolist() == [15, 7]
    assert torch.equal(s.ignore, torch.from_numpy(obj == 255))
    assert s.weak == {7: 1, 15: 1} and s.image_id == 2007000032
    # palette PNGs really are palette PNGs
    with Image.open(voc / "SegmentationObject" / "2007_000032.png") as im:
        assert im.mode == "P"


def test_subset_stats_and_splits(voc):
    ds = VOCInstances(voc, "train")
    sub = ds.subset([2007000039])
    assert sub.ids == [2007000039] and sub[0].image_id == 2007000039
    st = ds.stats(0)
    assert st.n_objects == 2 and st.n_classes == 2 and st.weak == {7: 1, 15: 1}
    assert st.mean_object_area == pytest.approx(ds[0].mean_object_area)
    assert ds.splits() == ["train", "val"]
    assert VOCInstances(voc, "val").ids == [2008000002]


def test_empty_image_is_kept_with_no_instances(tmp_path):
    obj = np.zeros((H, W), np.uint8)
    obj[0] = 255
    root = make_voc(tmp_path, {"train": ["e"]}, maps={"e": (obj, obj.copy())})
    s = VOCInstances(root, "train")[0]
    assert s.masks.shape == (0, H, W) and s.labels.shape == (0,) and s.ignore[0].all()


def test_synthetic_round_trip(tmp_path):
    pool, _ = synthetic_splits(SyntheticConfig(image_size=32), 5, 6, 0)
    write_voc(tmp_path, {"train": [pool[i] for i in range(len(pool))]})
    back = VOCInstances(tmp_path, "train")
    assert back.ids == pool.ids
    for i in range(len(pool)):
        a, b = pool[i], back[i]
        assert torch.equal(a.masks, b.masks) and torch.equal(a.labels, b.labels)
        assert torch.equal(b.ignore, a.ignore & ~a.masks.any(0))
        assert (a.image - b.image).abs().mean() < 0.02  # JPEG, 4:4:4, quality 98


def _error(ds_or_fn):
    with pytest.raises(DataError) as err:
        ds_or_fn()
    return str(err.value)


def test_missing_folder_and_split(tmp_path, voc):
    (tmp_path / "x" / "JPEGImages").mkdir(parents=True)
    msg = _error(lambda: VOCInstances(tmp_path / "x", "train"))
    assert "SegmentationObject" in msg and str(tmp_path / "x") in msg
    msg = _error(lambda: VOCInstances(voc, "trainval"))
    assert "trainval.txt" in msg and "not found" in msg


def test_missing_image(voc):
    (voc / "JPEGImages" / "2007_000032.jpg").unlink()
    assert "2007_000032.jpg" in _error(lambda: VOCInstances(voc, "train")[0])


@pytest.mark.parametrize("what", ["garbage", "truncated"])
def test_corrupt_png(voc, what):
    p = voc / "SegmentationObject" / "2007_000032.png"
    data = p.read_bytes()
    p.write_bytes(b"not a png at all" if what == "garbage" else data[: len(data) // 2])
    msg = _error(lambda: VOCInstances(voc, "train")[0])
    assert str(p) in msg and "corrupt" in msg


def test_truncated_jpeg(voc):
    p = voc / "JPEGImages" / "2007_000039.jpg"
    p.write_bytes(p.read_bytes()[:200])
    msg = _error(lambda: VOCInstances(voc, "train")[1])
    assert str(p) in msg


def test_rgb_label_png(voc):
    p = voc / "SegmentationClass" / "2007_000032.png"
    Image.new("RGB", (W, H)).save(p)
    msg = _error(lambda: VOCInstances(voc, "train")[0])
    assert str(p) in msg and "'RGB'" in msg


def test_class_id_outside_label_set(voc):
    obj, cls = voc_maps()
    cls[cls == 7] = 42
    p = voc / "SegmentationClass" / "2007_000032.png"
    write_index_png(p, cls)
    msg = _error(lambda: VOCInstances(voc, "train")[0])
    assert str(p) in msg and "42" in msg


@pytest.mark.parametrize("case", ["over_background", "two_classes", "class_without_instance",
                                  "size"])
def test_object_and_class_pngs_disagree(voc, case):
    obj, cls = voc_maps()
    if case == "over_background":
        obj[20:22, 2:4] = 3
    elif case == "two_classes":
        cls[18:20, 24:30] = 9
    elif case == "class_without_instance":
        cls[20:22, 2:4] = 4
    else:
        obj = obj[:-2]
    p = voc / "SegmentationObject" / "2007_000032.png"
    write_index_png(p, obj)
    write_index_png(voc / "SegmentationClass" / "2007_000032.png", cls)
    msg = _error(lambda: VOCInstances(voc, "train")[0])
    assert "2007_000032.png" in msg


def test_image_ids_from_names():
    from basis.data import image_id_from_name

    assert image_id_from_name("2007_000032") == 2007000032
    assert image_id_from_name("0000017") == 17
    assert image_id_from_name("cat_photo") == image_id_from_name("cat_photo") >= 0
