"""COCO JSON read (polygons, RLE, iscrowd) and write (ground truth and pseudo-labels)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from basis.data import COCOInstances, DataError, VOCInstances, write_coco
from basis.data.coco import encode_rle
from basis.data.imageio import write_rgb
from basis.types import ImagePrediction
from tests.basis.datafix import H, W, image, make_voc


def _dataset(tmp_path):
    write_rgb(tmp_path / "imgs" / "a.png", image(0))
    write_rgb(tmp_path / "imgs" / "b.png", image(1))
    poly_mask = np.zeros((H, W), bool)
    poly_mask[4:14, 4:20] = True  # the polygon below covers exactly these pixels
    rle_mask = np.zeros((H, W), bool)
    rle_mask[20:30, 25:38] = True
    crowd = np.zeros((H, W), bool)
    crowd[0:3, :] = True
    uncompressed = {"size": [H, W], "counts": _uncompressed_counts(rle_mask)}
    data = {
        "images": [{"id": 7, "file_name": "imgs/a.png", "height": H, "width": W},
                   {"id": 9, "file_name": "imgs/b.png", "height": H, "width": W}],
        "categories": [{"id": 17, "name": "dog"}, {"id": 5, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 17, "iscrowd": 0,
             "segmentation": [[4, 4, 20, 4, 20, 14, 4, 14]]},
            {"id": 2, "image_id": 7, "category_id": 5, "iscrowd": 0,
             "segmentation": encode_rle(rle_mask)},
            {"id": 3, "image_id": 7, "category_id": 5, "iscrowd": 1,
             "segmentation": {"size": [H, W], "counts": _uncompressed_counts(crowd)}},
            {"id": 4, "image_id": 9, "category_id": 5, "iscrowd": 0,
             "segmentation": uncompressed},
        ]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path, poly_mask, rle_mask, crowd


def _uncompressed_counts(m: np.ndarray) -> list[int]:
    flat = m.T.ravel().astype(np.uint8)  # column-major, as COCO
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    return counts


def test_reads_polygons_rle_and_crowd(tmp_path):
    path, poly_mask, rle_mask, crowd = _dataset(tmp_path)
    ds = COCOInstances(path)
    assert ds.ids == [7, 9]
    assert ds.category_ids == [5, 17] and ds.class_names == ("cat", "dog")
    s = ds[0]
    assert s.labels.tolist() == [2, 1]  # dog (17) → 2, cat (5) → 1
    assert torch.equal(s.masks[1], torch.from_numpy(rle_mask))
    assert (s.masks[0] ^ torch.from_numpy(poly_mask)).sum() <= 30  # polygon rasterisation
    assert s.masks[0][6:12, 6:18].all()
    assert torch.equal(s.ignore, torch.from_numpy(crowd))
    t = ds.subset([9])[0]
    assert t.image_id == 9 and torch.equal(t.masks[0], torch.from_numpy(rle_mask))
    assert torch.allclose(s.image, image(0), atol=1 / 255)


@pytest.mark.parametrize("field,value,expect", [("category_id", 99, "unknown category id 99"),
                                                ("image_id", 123, "unknown image id 123")])
def test_unknown_ids(tmp_path, field, value, expect):
    path, *_ = _dataset(tmp_path)
    data = json.loads(path.read_text())
    data["annotations"][1][field] = value
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as err:
        COCOInstances(path)
    assert str(path) in str(err.value) and expect in str(err.value)


def test_bad_json_and_missing_image(tmp_path):
    path, *_ = _dataset(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        COCOInstances(bad)
    (tmp_path / "imgs" / "b.png").unlink()
    with pytest.raises(DataError, match="b.png"):
        COCOInstances(path)[1]


def test_voc_and_its_coco_export_agree(tmp_path):
    voc = make_voc(tmp_path / "voc", {"train": ["2007_000032", "2007_000039"]})
    src = VOCInstances(voc, "train")
    samples = [src[i] for i in range(len(src))]
    out = write_coco(samples, tmp_path / "coco" / "train.json", list(src.class_names),
                     image_dir=tmp_path / "coco" / "images")
    back = COCOInstances(out)
    assert back.ids == src.ids and back.n_classes == 20
    for a, b in zip(samples, (back[i] for i in range(len(back)))):
        assert torch.equal(a.masks, b.masks)
        assert torch.equal(a.labels, b.labels)
        assert torch.equal(a.ignore, b.ignore)
        assert torch.equal(a.image, b.image)  # PNG is lossless


def test_write_predictions_as_pseudo_labels(tmp_path):
    m1 = np.zeros((H, W), bool)
    m1[2:10, 3:9] = True
    m2 = np.zeros((H, W), bool)
    m2[15:25, 20:30] = True
    pred = ImagePrediction(image_id=4, height=H, width=W, rles=[encode_rle(m1), encode_rle(m2)],
                           labels=[3, 1], scores=[0.9, 0.2], iou_pred=[0.8, 0.4])
    cats = [{"id": 10, "name": "a"}, {"id": 20, "name": "b"}, {"id": 30, "name": "c"}]
    out = write_coco([pred], tmp_path / "pseudo.json", cats, score_threshold=0.1)
    data = json.loads(out.read_text())
    assert [a["category_id"] for a in data["annotations"]] == [30, 10]
    assert [a["score"] for a in data["annotations"]] == [0.9, 0.2]
    assert data["annotations"][0]["iou_pred"] == 0.8
    assert data["annotations"][0]["area"] == int(m1.sum())
    assert isinstance(data["annotations"][0]["segmentation"]["counts"], str)
    write_rgb(tmp_path / "4.png", image(0))
    s = COCOInstances(out)[0]
    assert s.labels.tolist() == [3, 1]
    assert torch.equal(s.masks[0], torch.from_numpy(m1))
    high = write_coco([pred], tmp_path / "hi.json", cats, score_threshold=0.5)
    assert len(json.loads(high.read_text())["annotations"]) == 1
