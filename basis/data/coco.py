"""COCO-format instance annotations: reader and writer (through pycocotools).

Reading: polygon, uncompressed-RLE and compressed-RLE segmentations; ``iscrowd`` regions
become ``Sample.ignore`` (they are regions to ignore, not instances); category ids are
remapped to 1..C in increasing id order, the mapping kept in ``category_ids``.

Writing (`write_coco`): ground-truth samples or `ImagePrediction` pseudo-labels as a COCO
dataset JSON with compressed RLE masks; predictions carry ``score`` (and ``iou_pred``) per
annotation, and the file reads back through `COCOInstances`.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from basis.data.base import DataError, InstanceDataset, Transform
from basis.data.imageio import read_rgb, write_rgb
from basis.types import ImagePrediction, Sample


def _load_coco(json_path: Path) -> COCO:
    if not json_path.is_file():
        raise DataError(f"{json_path}: COCO JSON not found")
    try:
        data = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{json_path}: not valid JSON: {err}") from err
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise DataError(f"{json_path}: not a COCO dataset file (needs 'images', 'annotations' "
                        "and 'categories' lists)")
    data.setdefault("categories", [])
    img_ids = {im["id"] for im in data["images"]}
    cat_ids = {c["id"] for c in data["categories"]}
    for a in data["annotations"]:
        if a.get("image_id") not in img_ids:
            raise DataError(f"{json_path}: annotation {a.get('id')} refers to unknown image id "
                            f"{a.get('image_id')!r}")
        if a.get("category_id") not in cat_ids:
            raise DataError(f"{json_path}: annotation {a.get('id')} has unknown category id "
                            f"{a.get('category_id')!r} (known: {sorted(cat_ids)})")
        if "segmentation" not in a:
            raise DataError(f"{json_path}: annotation {a.get('id')} has no segmentation")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
        coco.createIndex()
    return coco


def load_coco(json_path: str | Path) -> COCO:
    """A COCO instances file, checked (`DataError` naming the file and the entry): its
    images, annotations and categories lists, and every annotation's image, category
    and segmentation."""
    return _load_coco(Path(json_path))


#: Where the images of a COCO JSON are looked for, in order, relative to its folder.
IMAGE_FOLDERS = ("images", ".")


def find_image_root(json_path: str | Path, file_names: Sequence[str], probe: int = 20
                    ) -> Path:
    """The folder the ``file_name`` entries of a COCO JSON are relative to, when none is
    given: an ``images/`` folder beside the JSON, then the JSON's own folder — the one
    where most of the first ``probe`` file names exist (ties: that order). If none
    holds any, ``images/`` when it exists, else the JSON's folder (the errors that
    follow then name the missing files there)."""
    base = Path(json_path).parent
    names = list(file_names)[:probe]
    best, hits = None, 0
    for sub in IMAGE_FOLDERS:
        root = (base / sub) if sub != "." else base
        if not root.is_dir():
            continue
        n = sum((root / name).is_file() for name in names)
        if n > hits:
            best, hits = root, n
    if best is not None:
        return best
    return base / "images" if (base / "images").is_dir() else base


class COCOInstances(InstanceDataset):
    """A COCO-format instance-segmentation dataset.

    Args:
        json_path: the annotation file.
        image_root: folder the images' ``file_name`` is relative to (default: the JSON's
            folder).
        ids: COCO image ids to use, in order (default: all, in file order).
        transform: applied by ``__getitem__``.

    Attributes:
        category_ids: contiguous label c (1..C) → original COCO category id, at ``[c - 1]``.
        class_names: names of labels 1..C.
    """

    def __init__(self, json_path: str | Path, image_root: str | Path | None = None, *,
                 ids: Sequence[int] | None = None, transform: Transform | None = None,
                 _coco: COCO | None = None) -> None:
        self.json_path = Path(json_path)
        self.image_root = Path(image_root) if image_root is not None else self.json_path.parent
        self.coco = _coco if _coco is not None else _load_coco(self.json_path)
        cats = sorted(self.coco.dataset["categories"], key=lambda c: c["id"])
        self.category_ids = [int(c["id"]) for c in cats]
        self.class_names = tuple(str(c.get("name", c["id"])) for c in cats)
        self.n_classes = len(cats)
        self._label = {cid: k for k, cid in enumerate(self.category_ids, start=1)}
        all_ids = [int(im["id"]) for im in self.coco.dataset["images"]]
        if ids is None:
            self.ids = all_ids
        else:
            known = set(all_ids)
            unknown = [int(d) for d in ids if int(d) not in known]
            if unknown:
                raise KeyError(f"{self.json_path}: image ids {unknown[:5]} not in the file")
            self.ids = [int(d) for d in ids]
        if len(set(self.ids)) != len(self.ids):
            raise DataError(f"{self.json_path}: duplicate image ids")
        self.transform = transform

    def subset(self, ids: Sequence[int]) -> "COCOInstances":
        return COCOInstances(self.json_path, self.image_root, ids=ids, transform=self.transform,
                             _coco=self.coco)

    def source(self, i: int) -> str:
        return f"{self.json_path} (image {self.ids[i]})"

    def load(self, i: int) -> Sample:
        image_id = self.ids[i]
        info = self.coco.imgs[image_id]
        path = self.image_root / info["file_name"]
        image = read_rgb(path)
        h, w = image.shape[-2:]
        if (info.get("height", h), info.get("width", w)) != (h, w):
            raise DataError(f"{path}: image is {w}x{h} but {self.json_path} says "
                            f"{info.get('width')}x{info.get('height')}")
        masks, labels = [], []
        ignore = np.zeros((h, w), dtype=bool)
        for ann in self.coco.imgToAnns.get(image_id, []):
            try:
                m = self.coco.annToMask(ann).astype(bool)
            except Exception as err:  # malformed polygon / RLE
                raise DataError(f"{self.json_path}: annotation {ann.get('id')}: bad "
                                f"segmentation: {err}") from err
            if m.shape != (h, w):
                raise DataError(f"{self.json_path}: annotation {ann.get('id')} mask is "
                                f"{m.shape[1]}x{m.shape[0]}, image {image_id} is {w}x{h}")
            if ann.get("iscrowd", 0):
                ignore |= m
            elif m.any():
                masks.append(m)
                labels.append(self._label[ann["category_id"]])
        masks_a = np.stack(masks) if masks else np.zeros((0, h, w), dtype=bool)
        return Sample(image=image, masks=torch.from_numpy(masks_a),
                      labels=torch.tensor(labels, dtype=torch.int64),
                      ignore=torch.from_numpy(ignore), image_id=image_id)


def encode_rle(mask: np.ndarray) -> dict:
    """A compressed RLE of an (H, W) bool mask, ``counts`` as str (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _rle_area_bbox(rle: dict) -> tuple[int, list[float]]:
    r = dict(rle)
    if isinstance(r["counts"], str):
        r["counts"] = r["counts"].encode("ascii")
    # One RLE per call: pycocotools 2.0.11 overflows on lists of >= 256 (DESIGN.md).
    return int(mask_utils.area(r)), [float(x) for x in mask_utils.toBbox(r)]


def write_coco(items: Sequence[Sample] | Sequence[ImagePrediction], path: str | Path,
               categories: Sequence[str] | Sequence[Mapping], *,
               image_dir: str | Path | None = None,
               file_names: Mapping[int, str] | None = None,
               score_threshold: float = 0.0) -> Path:
    """Write samples (ground truth) or predictions (pseudo-labels) as a COCO dataset JSON.

    Args:
        items: `Sample`s, or `ImagePrediction`s whose ``rles`` become the masks.
        path: the JSON file to write.
        categories: names of labels 1..C (written with ids 1..C), or COCO category dicts
            (``{"id", "name"}``) where label c is ``categories[c - 1]``.
        image_dir: for samples, also write each image there as a lossless PNG and point
            ``file_name`` at it (relative to the JSON's folder).
        file_names: image id → ``file_name`` to record (default ``<image_id>.png``).
        score_threshold: predicted objects scoring below it are left out.

    A sample's ignore region is written as one ``iscrowd: 1`` annotation (category of
    label 1, marked ``"void": true``), which `COCOInstances` reads back as ignore.

    Returns:
        ``path``.
    """
    path = Path(path)
    cats: list[dict[str, Any]] = [
        dict(c) if isinstance(c, Mapping) else {"id": k, "name": str(c)}
        for k, c in enumerate(categories, start=1)]
    if not cats:
        raise ValueError("write_coco needs at least one category")
    cat_of = {k: int(c["id"]) for k, c in enumerate(cats, start=1)}
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    # (rle, label, (score, iou_pred) for predictions, True for the void region)
    objs: list[tuple[dict, int, tuple[float, float | None] | None, bool]]
    for it in items:
        image_id = int(it.image_id)
        fname = (file_names or {}).get(image_id, f"{image_id}.png")
        if isinstance(it, Sample):
            h, w = (int(x) for x in it.image.shape[-2:])
            if image_dir is not None:
                img_path = Path(image_dir) / fname
                write_rgb(img_path, it.image)
                fname = Path(os.path.relpath(img_path, path.parent)).as_posix()
            objs = [(encode_rle(m), int(c), None, False)
                    for m, c in zip(it.masks.numpy(), it.labels.tolist())]
            if it.ignore.any():
                objs.append((encode_rle(it.ignore.numpy()), 1, None, True))
        else:
            h, w = int(it.height), int(it.width)
            iou: list[float | None] = (list(it.iou_pred) if len(it.iou_pred) == len(it.rles)
                                       else [None] * len(it.rles))
            objs = [(dict(r), int(c), (float(s), q), False)
                    for r, c, s, q in zip(it.rles, it.labels, it.scores, iou)
                    if float(s) >= score_threshold]
        images.append({"id": image_id, "file_name": fname, "height": h, "width": w})
        for rle, label, score, void in objs:
            if label not in cat_of:
                raise ValueError(f"image {image_id}: label {label} outside 1..{len(cats)}")
            if isinstance(rle["counts"], bytes):
                rle["counts"] = rle["counts"].decode("ascii")
            area, bbox = _rle_area_bbox(rle)
            ann = {"id": len(anns) + 1, "image_id": image_id, "category_id": cat_of[label],
                   "segmentation": rle, "area": area, "bbox": bbox,
                   "iscrowd": 1 if void else 0}
            if void:
                ann["void"] = True
            if score is not None:
                ann["score"] = score[0]
                if score[1] is not None:
                    ann["iou_pred"] = float(score[1])
            anns.append(ann)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    tmp.replace(path)
    return path
