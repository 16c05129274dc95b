"""The COCO files of a labelling campaign (`basis.data.labelling`) and the cost helpers
of ``basis select``: pure functions on small files written here."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from basis.budget import AnnotationCosts, image_seconds, images_for_days
from basis.data.base import DataError
from basis.data.coco import encode_rle, find_image_root
from basis.data.imageio import probe_image
from basis.data.labelling import (
    PoolImage,
    WeakPool,
    label_stats,
    match_returned,
    merge_training_set,
    preannotations,
    read_labelled,
    read_pool,
)
from basis.types import ImagePrediction

CATS = [{"id": 4, "name": "cat"}, {"id": 9, "name": "dog"}]


def _png(path: Path, h: int = 24, w: int = 32, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(path)


def _box(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _labelled(tmp: Path, polygons: bool = False) -> Path:
    """Two images under images/: one RLE mask (cat), one polygon or RLE (dog)."""
    _png(tmp / "images" / "a.png")
    _png(tmp / "images" / "b.png", 30, 20)
    seg_b = ([[2.0, 2.0, 12.0, 2.0, 12.0, 14.0, 2.0, 14.0]] if polygons
             else encode_rle(_box(30, 20, 2, 14, 2, 12)))
    data = {"images": [{"id": 1, "file_name": "a.png", "height": 24, "width": 32},
                       {"id": 2, "file_name": "b.png"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 4, "iscrowd": 0,
                 "segmentation": encode_rle(_box(24, 32, 2, 10, 3, 9))},
                {"id": 2, "image_id": 1, "category_id": 4, "iscrowd": 0,
                 "segmentation": encode_rle(_box(24, 32, 12, 20, 12, 30))},
                {"id": 3, "image_id": 2, "category_id": 9, "iscrowd": 0,
                 "segmentation": seg_b}],
            "categories": CATS}
    (tmp / "labelled.json").write_text(json.dumps(data))
    return tmp / "labelled.json"


def _pool(tmp: Path, images: list[dict], categories=CATS, annotations=()) -> Path:
    for im in images:
        if not (tmp / "images" / im["file_name"]).exists():
            _png(tmp / "images" / im["file_name"], im.get("height", 24), im.get("width", 32))
    path = tmp / "pool.json"
    path.write_text(json.dumps({"images": images, "categories": categories,
                                "annotations": list(annotations)}))
    return path


def test_image_root_is_images_beside_the_json_then_its_folder(tmp_path):
    _png(tmp_path / "images" / "a.png")
    assert find_image_root(tmp_path / "x.json", ["a.png"]) == tmp_path / "images"
    # file names relative to the JSON's folder (as write_coco writes them)
    assert find_image_root(tmp_path / "x.json", ["images/a.png"]) == tmp_path
    _png(tmp_path / "b.png")
    assert find_image_root(tmp_path / "x.json", ["b.png"]) == tmp_path
    assert find_image_root(tmp_path / "x.json", ["nowhere.png"]) == tmp_path / "images"


def test_probe_converts_grey_palette_rgba_and_refuses_wide_or_broken_files(tmp_path):
    for mode in ("L", "P", "RGBA", "1"):
        _png(tmp_path / f"{mode}.png", mode=mode)
        assert probe_image(tmp_path / f"{mode}.png") == (24, 32, mode)
    Image.fromarray(np.full((8, 8), 4000, dtype=np.uint16)).save(tmp_path / "g16.png")
    with pytest.raises(DataError, match=r"g16.png: 16-bit image .*refused"):
        probe_image(tmp_path / "g16.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match=r"bad.png: cannot read image"):
        probe_image(tmp_path / "bad.png")
    with pytest.raises(DataError, match=r"gone.png: image file not found"):
        probe_image(tmp_path / "gone.png")


@pytest.mark.parametrize("polygons", [False, True])
def test_labelled_set_reads_rle_and_polygons_and_measures_table1_stats(tmp_path, polygons):
    info, data = read_labelled(_labelled(tmp_path, polygons))
    assert info.image_root == (tmp_path / "images").resolve()
    assert info.category_ids == (4, 9) and info.label_of() == {4: 1, 9: 2}
    assert (info.n_images, info.n_objects) == (2, 3)
    assert info.objects_per_image == 1.5 and info.classes_per_image == 1.0
    assert data["images"][1]["height"] == 30       # filled in from the file
    assert label_stats(data) == (2, 1.5, 1.0)


def test_labelled_set_refuses_empty_sets_and_bad_masks(tmp_path):
    path = _labelled(tmp_path)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "images": [], "annotations": []}))
    with pytest.raises(DataError, match=r"labelled.json: the labelled set is empty \(no images"):
        read_labelled(path)
    path.write_text(json.dumps({**data, "annotations": [
        {**a, "iscrowd": 1} for a in data["annotations"]]}))
    with pytest.raises(DataError, match=r"empty: 2 images but no object .*--crowd-as-objects"):
        read_labelled(path)
    assert read_labelled(path, crowd_as_objects=True)[0].n_objects == 3
    bad = dict(data["annotations"][0], segmentation=encode_rle(_box(10, 10, 0, 5, 0, 5)))
    path.write_text(json.dumps({**data, "annotations": [bad]}))
    with pytest.raises(DataError, match=r"annotation 1: its mask is 10x10, image 1 is 32x24"):
        read_labelled(path)


def test_pool_counts_become_il_c_and_are_checked(tmp_path):
    labelled, _ = read_labelled(_labelled(tmp_path))
    good = [{"id": 10, "file_name": "p.png", "counts": {"4": 2, "9": 0}},
            {"id": 11, "file_name": "q.png", "height": 40, "width": 16, "counts": {}}]
    pool = read_pool(_pool(tmp_path, good), labelled)
    assert pool.has_counts and not pool.has_annotations
    p, q = pool.images
    assert p.counts == ((4, 2),) and (p.n_weak, p.n_classes) == (2, 1)
    assert (q.height, q.width, q.n_weak) == (40, 16, 0)
    ds = WeakPool(pool.images, 16, labelled.label_of())
    s = ds[0]
    assert s.image.shape == (3, 16, 16) and s.labels.tolist() == [1, 1]
    assert s.masks.shape == (0, 16, 16) and ds.subset([11])[0].labels.numel() == 0

    def refused(images, pattern, categories=CATS):
        with pytest.raises(DataError, match=pattern):
            read_pool(_pool(tmp_path, images, categories), labelled)

    refused([good[0], {"id": 11, "file_name": "q.png"}],
            r"pool.json: 1 of 2 images carry 'counts' .* image 11 does not")
    refused([{"id": 10, "file_name": "p.png", "counts": {"5": 1}}],
            r"pool.json: image 10: counts name category 5, which is not a category of "
            r"labelled.json")
    refused([{"id": 10, "file_name": "p.png", "counts": {"4": -1}}], r"counts\['4'\]=-1")
    refused(good, r"pool.json: category 12 \('bird'\) is absent from the labelled set",
            CATS + [{"id": 12, "name": "bird"}])
    refused(good, r"category 9 is 'wolf' here but 'dog' in labelled.json",
            [CATS[0], {"id": 9, "name": "wolf"}])
    refused([{"id": 10, "file_name": "p.png"}, {"id": 10, "file_name": "q.png"}],
            r"image id 10 is listed twice")
    path = _pool(tmp_path, [{"id": 10, "file_name": "gone.png"}])
    (tmp_path / "images" / "gone.png").unlink()
    with pytest.raises(DataError, match=r"pool.json: image 10: .*gone.png: image file not "
                       r"found; images are looked for in .*images \(--images"):
        read_pool(path, labelled)
    assert read_pool(path, labelled, check_files=False).images[0].file_name == "gone.png"


def _selection(tmp_path: Path) -> tuple[list[PoolImage], dict, Path]:
    sel = [PoolImage(10, "p.png", str(tmp_path / "p.png"), 24, 32),
           PoolImage(11, "sub/q.png", str(tmp_path / "q.png"), 24, 32)]
    raw = {10: {"id": 10, "file_name": "p.png", "counts": {"4": 1}, "license": 2},
           11: {"id": 11, "file_name": "sub/q.png"}}
    anns = [{"id": 1, "image_id": 10, "category_id": 4, "iscrowd": 0,
             "segmentation": [[1.0, 1.0, 9.0, 1.0, 9.0, 9.0]]},
            {"id": 2, "image_id": 11, "category_id": 9, "iscrowd": 1,
             "segmentation": encode_rle(_box(24, 32, 0, 4, 0, 4))}]
    path = tmp_path / "returned.json"
    path.write_text(json.dumps({"images": [{"id": 10, "file_name": "p.png", "height": 24,
                                            "width": 32},
                                           {"id": 11, "file_name": "q.png", "height": 24,
                                            "width": 32}],
                                "annotations": anns, "categories": CATS}))
    return sel, raw, path


def test_returned_labels_come_back_under_the_pool_ids_and_categories(tmp_path):
    sel, raw, path = _selection(tmp_path)
    data, notes = match_returned(path, sel, raw, CATS, round_no=1)
    assert [im["id"] for im in data["images"]] == [10, 11]
    assert data["images"][0] == {"id": 10, "file_name": "p.png", "height": 24, "width": 32,
                                 "license": 2}                  # no counts sent back
    assert [a["image_id"] for a in data["annotations"]] == [10, 11]
    assert [a["iscrowd"] for a in data["annotations"]] == [0, 1]
    assert notes == ["1 annotation(s) have iscrowd 1 and are read as ignored regions; pass "
                     "--crowd-as-objects if they are objects (CVAT writes its mask shapes so)"]
    data, _ = match_returned(path, sel, raw, CATS, round_no=1, crowd_as_objects=True)
    assert [a["iscrowd"] for a in data["annotations"]] == [0, 0]
    # a labelling tool that renumbers images and categories (CVAT) is matched by name
    ret = json.loads(path.read_text())
    ret["images"] = [{**im, "id": k + 1} for k, im in enumerate(ret["images"])]
    ret["annotations"] = [{**a, "image_id": k + 1, "category_id": 1 + k}
                          for k, a in enumerate(ret["annotations"])]
    ret["categories"] = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    path.write_text(json.dumps(ret))
    data, notes = match_returned(path, sel, raw, CATS, round_no=1)
    assert [a["image_id"] for a in data["annotations"]] == [10, 11]
    assert [a["category_id"] for a in data["annotations"]] == [4, 9]
    assert len(notes) == 3 and "renumbered" in notes[0] and "by name" in notes[1]


def test_returned_labels_that_change_anything_are_refused_in_one_line(tmp_path):
    sel, raw, path = _selection(tmp_path)
    good = json.loads(path.read_text())

    def refused(data, pattern):
        path.write_text(json.dumps(data))
        with pytest.raises(DataError, match=pattern):
            match_returned(path, sel, raw, CATS, round_no=3)

    extra = {"id": 12, "file_name": "other.png", "height": 24, "width": 32}
    refused({**good, "images": good["images"] + [extra]},
            r"returned.json: image 12 \('other.png'\) is not in round 3's selection "
            r"\(ids 10, 11\)")
    refused({**good, "images": good["images"][:1], "annotations": good["annotations"][:1]},
            r"1 of round 3's 2 selected images are missing, e.g. image 11 \('sub/q.png'\)")
    refused({**good, "categories": CATS + [{"id": 5, "name": "bird"}]},
            r"category 5 \('bird'\) is not a category of the labelled set")
    refused({**good, "images": [{**good["images"][0], "height": 48}, good["images"][1]]},
            r"image 10 \('p.png'\) is 32x48, the pool's is 32x24")
    refused({**good, "images": good["images"] + [{**good["images"][0], "id": 99}]},
            r"image 99 \('p.png'\) is selected image 10 a second time")


def test_training_set_merges_parts_with_absolute_file_names(tmp_path):
    _, data = read_labelled(_labelled(tmp_path))
    sel, raw, path = _selection(tmp_path)
    returned, _ = match_returned(path, sel, raw, CATS, round_no=1)
    merged = merge_training_set([(data, tmp_path / "images"), (returned, tmp_path / "pool")],
                                CATS)
    assert [im["id"] for im in merged["images"]] == [1, 2, 3, 4]
    assert merged["images"][3]["file_name"] == str((tmp_path / "pool" / "sub/q.png").resolve())
    assert [a["image_id"] for a in merged["annotations"]] == [1, 1, 2, 3, 4]
    assert [a["id"] for a in merged["annotations"]] == [1, 2, 3, 4, 5]


def test_preannotations_are_coco_rle_at_each_image_size_under_the_pool_ids(tmp_path):
    """Masks predicted at 16 px go back to 24×32 and 40×16 images; pycocotools reads the
    file and takes its annotations as results (``loadRes``)."""
    m = torch.zeros(2, 16, 16, dtype=torch.bool)
    m[0, 2:10, 2:8] = True
    m[1, 8:16, 0:16] = True
    rles = [encode_rle(x.numpy()) for x in m]
    images = [PoolImage(10, "p.png", "/x/p.png", 24, 32), PoolImage(11, "q.png", "/x/q.png",
                                                                    40, 16)]
    preds = [ImagePrediction(10, 16, 16, rles=rles, labels=[1, 2], scores=[0.9, 0.4],
                             iou_pred=[0.7, 0.2], steps=[0, 1]),
             # an RSIS mask with two class detections: one annotation, its best class
             ImagePrediction(11, 16, 16, rles=[rles[0], rles[0], rles[1]], labels=[1, 2, 2],
                             scores=[0.2, 0.5, 0.1], iou_pred=[0.3, 0.3, 0.0],
                             steps=[0, 0, 1])]
    raw = {10: {"id": 10, "file_name": "p.png", "counts": {"4": 1}},
           11: {"id": 11, "file_name": "q.png"}}
    out = preannotations(preds, images, raw, CATS, {1: 4, 2: 9})
    assert [im["id"] for im in out["images"]] == [10, 11]
    assert "counts" not in out["images"][0]
    anns = out["annotations"]
    pairs = [(a["image_id"], a["category_id"]) for a in anns]
    assert pairs == [(10, 4), (10, 9), (11, 9), (11, 9)]
    assert anns[2]["score"] == 0.5 and anns[2]["iou_pred"] == 0.3
    for a in anns:
        h, w = (24, 32) if a["image_id"] == 10 else (40, 16)
        seg = a["segmentation"]
        assert seg["size"] == [h, w] and isinstance(seg["counts"], str)
        assert a["iscrowd"] == 0 and a["area"] > 0 and len(a["bbox"]) == 4
        dec = mask_utils.decode({**seg, "counts": seg["counts"].encode()})
        assert dec.shape == (h, w) and int(dec.sum()) == a["area"]
    assert anns[0]["bbox"] == [4.0, 3.0, 12.0, 12.0]   # the 16-px box [2:10, 2:8] at 24×32
    path = tmp_path / "pre.json"
    path.write_text(json.dumps(out))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
        res = gt.loadRes(out["annotations"])
    assert len(res.getAnnIds()) == 4 and sorted(gt.getImgIds()) == [10, 11]
    # a class outside the categories written (RSIS on a pool listing fewer) is left out
    assert len(preannotations(preds, images, raw, CATS[:1], {1: 4, 2: 9})["annotations"]) == 1


def test_days_buy_images_at_table1_t_full_and_an_image_costs_its_content():
    voc = AnnotationCosts()                     # t_full 239.7 s
    assert images_for_days(1.0, voc) == 360     # 86 400 / 239.7 = 360.4
    one = AnnotationCosts(n_classes=2, classes_per_image=1.0, objects_per_image=1.0,
                          s_mask=86_400 / 4 - 1.0)
    assert one.t_full == 86_400 / 4 and images_for_days(1.0, one) == 4
    assert images_for_days(0.001, voc) == 0
    with pytest.raises(ValueError, match="days must be a finite number > 0"):
        images_for_days(0, voc)
    assert image_seconds(3, 2, voc) == 18 * 1.0 + 3 * 79.0
    assert image_seconds(0, 0, voc) == 20.0
