"""The COCO files of a labelling campaign (``basis select``): the labelled set, the
unlabelled pool with its IL+C counts, the labels annotators return, and the
pre-annotations sent to them.

* The labelled set is a COCO instances JSON with masks (polygons or RLE); its
  categories are the classes the network learns (label c = the c-th category by id).
* The pool is a COCO JSON whose ``images`` entries may carry ``"counts": {"<category
  id>": <instances>}``, their image-level labels plus counts (IL+C): W-RSIS's input.
  Every image or none carries them. Annotations in the pool are allowed and never
  shown to the network (they only give an oracle image IoU).
* Images: greyscale, palette, RGBA and CMYK files are converted to RGB; mixed sizes
  are resized to the network's size (and the pre-annotations back to each image's
  own size); files of more than 8 bits per channel are refused (`probe_image`).

Every check raises `DataError` with one line naming the file and the entry. Pure
functions of files: no training here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from basis.data.base import DataError, InstanceDataset
from basis.data.coco import _rle_area_bbox, encode_rle, find_image_root, load_coco
from basis.data.imageio import probe_image, read_rgb
from basis.types import ImagePrediction, Sample

#: The keys of a pool image entry that the pre-annotations keep (COCO's own).
IMAGE_KEYS = ("id", "file_name", "height", "width", "license", "coco_url", "flickr_url",
              "date_captured")


@dataclass(frozen=True)
class LabelledSet:
    """A checked labelled set.

    Attributes:
        path: its COCO JSON.
        image_root: the folder its ``file_name`` entries are relative to.
        categories: its category entries, sorted by id (label c is ``categories[c-1]``).
        n_images, n_objects: images and (non-crowd) instances.
        objects_per_image, classes_per_image: means over its images (Table 1's inputs).
        files: the resolved paths of its images.
    """

    path: Path
    image_root: Path
    categories: tuple[Mapping[str, Any], ...]
    n_images: int
    n_objects: int
    objects_per_image: float
    classes_per_image: float
    files: frozenset[str]

    @property
    def category_ids(self) -> tuple[int, ...]:
        return tuple(int(c["id"]) for c in self.categories)

    def label_of(self) -> dict[int, int]:
        """COCO category id → the network's label (1..C)."""
        return {cid: k for k, cid in enumerate(self.category_ids, start=1)}


@dataclass(frozen=True)
class PoolImage:
    """One pool image.

    Attributes:
        id, file_name: as in the pool JSON.
        path: the resolved image file.
        height, width: its size, read from the file.
        counts: its IL+C labels as ((category id, instances), …) sorted by id, or None.
    """

    id: int
    file_name: str
    path: str
    height: int
    width: int
    counts: tuple[tuple[int, int], ...] | None = None

    @property
    def n_weak(self) -> int | None:
        """Instances by the IL+C counts (None without counts)."""
        return None if self.counts is None else sum(n for _, n in self.counts)

    @property
    def n_classes(self) -> int | None:
        return None if self.counts is None else sum(1 for _, n in self.counts if n)


@dataclass(frozen=True)
class Pool:
    """A checked pool: its images in file order, its categories, and whether it carries
    IL+C counts (then W-RSIS scores it) and annotations (then an oracle exists)."""

    path: Path
    image_root: Path
    images: tuple[PoolImage, ...]
    categories: tuple[Mapping[str, Any], ...]
    has_counts: bool
    has_annotations: bool

    def by_id(self) -> dict[int, PoolImage]:
        return {im.id: im for im in self.images}


def _name(c: Mapping[str, Any]) -> str:
    return str(c.get("name", c["id"]))


def _cat_list(cats: Sequence[Mapping[str, Any]], most: int = 6) -> str:
    shown = ", ".join(f"{c['id']} {_name(c)!r}" for c in cats[:most])
    return shown + (f", … ({len(cats)} in all)" if len(cats) > most else "")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path}: COCO JSON not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: not a COCO file (needs an 'images' list)")
    for key in ("annotations", "categories"):
        if not isinstance(data.get(key, []), list):
            raise DataError(f"{path}: '{key}' must be a list")
    return data


def _image_ids(path: Path, images: Sequence[Mapping[str, Any]]) -> None:
    seen: set[int] = set()
    for k, im in enumerate(images):
        if not isinstance(im, Mapping) or "id" not in im or "file_name" not in im:
            raise DataError(f"{path}: images[{k}] needs an 'id' and a 'file_name'")
        if isinstance(im["id"], bool) or not isinstance(im["id"], int):
            raise DataError(f"{path}: images[{k}] has id {im['id']!r}; COCO ids are integers")
        if im["id"] in seen:
            raise DataError(f"{path}: image id {im['id']} is listed twice")
        seen.add(im["id"])


def probe_files(path: Path, images: Sequence[dict[str, Any]], root: Path) -> list[str]:
    """Read every image of a COCO file's ``images`` (`probe_image`); fill in a missing
    ``height``/``width`` from the file → the resolved paths, in order.

    Raises:
        DataError: one line with how many failed and the first, naming the JSON, the
            image entry and the file; or an image whose size differs from its entry.
    """
    errors: list[str] = []
    files: list[str] = []
    for im in images:
        file = (root / str(im["file_name"])).resolve()
        files.append(str(file))
        try:
            h, w, _ = probe_image(file)
        except DataError as err:
            errors.append(f"image {im['id']}: {err}")
            continue
        if (im.setdefault("height", h), im.setdefault("width", w)) != (h, w):
            errors.append(f"image {im['id']}: {file} is {w}x{h} but the entry says "
                          f"{im['width']}x{im['height']}")
    if errors:
        more = f" ({len(errors)} of {len(images)} images fail; first shown)" \
            if len(errors) > 1 else ""
        raise DataError(f"{path}: {errors[0]}{more}; images are looked for in {root} "
                        "(--images sets the folder)")
    return files


def read_labelled(path: str | Path, images: str | Path | None = None, *,
                  crowd_as_objects: bool = False) -> tuple[LabelledSet, dict[str, Any]]:
    """Check a labelled set: a COCO JSON with categories, at least one (non-crowd)
    instance, every image readable and every mask decodable at its image's size.

    Args:
        images: the image folder (default: `find_image_root`).
        crowd_as_objects: read ``iscrowd: 1`` annotations as objects (labelling tools
            such as CVAT export their mask shapes that way), not as ignore regions.

    Returns:
        The summary, and the file's data as training reads it (sizes filled in,
        ``iscrowd`` rewritten by ``crowd_as_objects``).
    """
    path = Path(path)
    coco = load_coco(path)
    data = coco.dataset
    _image_ids(path, data["images"])
    if not data["images"]:
        raise DataError(f"{path}: the labelled set is empty (no images)")
    cats = sorted(data["categories"], key=lambda c: c["id"])
    if not cats:
        raise DataError(f"{path}: no categories: the labelled set names the classes to learn")
    if len({c["id"] for c in cats}) != len(cats):
        raise DataError(f"{path}: a category id is listed twice")
    if crowd_as_objects:
        for a in data["annotations"]:
            a["iscrowd"] = 0
    objects = [a for a in data["annotations"] if not a.get("iscrowd", 0)]
    if not objects:
        raise DataError(f"{path}: the labelled set is empty: {len(data['images'])} images "
                        "but no object annotation (iscrowd 0)" + (
                            "; its iscrowd 1 regions count as ignored, pass "
                            "--crowd-as-objects if they are your objects"
                            if data["annotations"] else ""))
    root = (Path(images) if images is not None else find_image_root(
        path, [str(im["file_name"]) for im in data["images"]])).resolve()
    files = probe_files(path, data["images"], root)
    for a in data["annotations"]:
        try:
            m = coco.annToMask(a)
        except Exception as err:  # malformed polygon / RLE
            raise DataError(f"{path}: annotation {a.get('id')} (image {a['image_id']}): "
                            f"bad segmentation: {err}") from err
        im = coco.imgs[a["image_id"]]
        if m.shape != (im["height"], im["width"]):
            raise DataError(f"{path}: annotation {a.get('id')}: its mask is "
                            f"{m.shape[1]}x{m.shape[0]}, image {a['image_id']} is "
                            f"{im['width']}x{im['height']}")
    n, opi, cpi = label_stats(data)
    info = LabelledSet(path=path, image_root=root, categories=tuple(cats), n_images=n,
                       n_objects=len(objects), objects_per_image=opi, classes_per_image=cpi,
                       files=frozenset(files))
    return info, data


def label_stats(data: Mapping[str, Any]) -> tuple[int, float, float]:
    """(images, objects per image, classes per image) of COCO data, counting the
    annotations with ``iscrowd`` 0: Table 1's statistics of a labelled set."""
    per_image: dict[int, list[int]] = {int(im["id"]): [] for im in data["images"]}
    for a in data["annotations"]:
        if not a.get("iscrowd", 0):
            per_image[int(a["image_id"])].append(int(a["category_id"]))
    n = len(per_image)
    if not n:
        return 0, 0.0, 0.0
    return (n, sum(len(v) for v in per_image.values()) / n,
            sum(len(set(v)) for v in per_image.values()) / n)


def _counts(path: Path, im: Mapping[str, Any], known: Mapping[int, Mapping[str, Any]],
            labelled: LabelledSet) -> tuple[tuple[int, int], ...]:
    raw = im["counts"]
    where = f"{path}: image {im['id']}"
    if not isinstance(raw, Mapping):
        raise DataError(f"{where}: counts must be a mapping {{\"<category id>\": "
                        f"<instances>}}, got {type(raw).__name__}")
    out: dict[int, int] = {}
    for key, n in raw.items():
        try:
            cid = int(key)
        except (TypeError, ValueError):
            raise DataError(f"{where}: counts key {key!r} is not a category id") from None
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise DataError(f"{where}: counts[{key!r}]={n!r}; instances are integers ≥ 0")
        if cid not in known:
            raise DataError(f"{where}: counts name category {cid}, which is not a "
                            f"category of {labelled.path.name} ({_cat_list(labelled.categories)})")
        if n:
            out[cid] = out.get(cid, 0) + n
    return tuple(sorted(out.items()))


def read_pool(path: str | Path, labelled: LabelledSet, images: str | Path | None = None,
              *, check_files: bool = True) -> Pool:
    """Check an unlabelled pool against the labelled set it is scored with.

    Checks: images with unique ids; its categories (if it lists any) all in the labelled
    set, under the same names; ``counts`` on every image or none, naming labelled
    categories with integer instances; annotations (if any) valid; every image file
    readable (``check_files``).
    """
    path = Path(path)
    data = _read_json(path)
    _image_ids(path, data["images"])
    if not data["images"]:
        raise DataError(f"{path}: the pool is empty (no images)")
    mine = {int(c["id"]): c for c in labelled.categories}
    cats = sorted(data.get("categories", []), key=lambda c: c.get("id", 0))
    for c in cats:
        if "id" not in c or int(c["id"]) not in mine:
            raise DataError(f"{path}: category {c.get('id')} ({_name(c)!r}) is absent from "
                            f"the labelled set {labelled.path.name} (its categories: "
                            f"{_cat_list(labelled.categories)}); the network only segments "
                            "classes it was trained on")
        if "name" in c and _name(c) != _name(mine[int(c["id"])]):
            raise DataError(f"{path}: category {c['id']} is {_name(c)!r} here but "
                            f"{_name(mine[int(c['id'])])!r} in {labelled.path.name}")
    with_counts = [im for im in data["images"] if "counts" in im]
    if with_counts and len(with_counts) != len(data["images"]):
        first = next(im for im in data["images"] if "counts" not in im)
        raise DataError(f"{path}: {len(with_counts)} of {len(data['images'])} images carry "
                        f"'counts' (IL+C) but image {first['id']} does not; give counts for "
                        "every image (W-RSIS) or for none (RSIS)")
    known = {cid: mine[cid] for cid in ({int(c["id"]) for c in cats} or mine)}
    has_annotations = bool(data.get("annotations"))
    if has_annotations:
        load_coco(path)     # checked as a COCO file: images, categories, segmentations
    root = (Path(images) if images is not None else find_image_root(
        path, [str(im["file_name"]) for im in data["images"]])).resolve()
    if check_files:
        files = probe_files(path, data["images"], root)
    else:
        files = [str((root / str(im["file_name"])).resolve()) for im in data["images"]]
    out = tuple(PoolImage(
        id=int(im["id"]), file_name=str(im["file_name"]), path=f,
        height=int(im.get("height", 0)), width=int(im.get("width", 0)),
        counts=_counts(path, im, known, labelled) if with_counts else None)
        for im, f in zip(data["images"], files))
    return Pool(path, root, out, tuple(cats or labelled.categories), bool(with_counts),
                has_annotations)


def image_entry(raw: Mapping[str, Any], image: PoolImage) -> dict[str, Any]:
    """A pool image's COCO entry for the files sent out: COCO's own keys (no
    ``counts``), the size read from the file."""
    out = {k: raw[k] for k in IMAGE_KEYS if k in raw}
    out.update(id=image.id, file_name=image.file_name, height=image.height,
               width=image.width)
    return out


def merge_training_set(parts: Sequence[tuple[Mapping[str, Any], Path]],
                       categories: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The COCO data a round trains on: the images and annotations of every part
    (the labelled set, then each round's returned labels), renumbered, with absolute
    ``file_name`` paths (the parts' images live in different folders).

    Args:
        parts: (COCO data, its image folder) pairs.
        categories: the labelled set's categories (every part uses their ids).
    """
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for data, root in parts:
        new_id: dict[int, int] = {}
        for im in data["images"]:
            new_id[int(im["id"])] = len(images) + 1
            images.append({"id": len(images) + 1, "height": int(im["height"]),
                           "width": int(im["width"]),
                           "file_name": str((Path(root) / str(im["file_name"])).resolve())})
        for a in data["annotations"]:
            anns.append({**a, "id": len(anns) + 1, "image_id": new_id[int(a["image_id"])]})
    return {"images": images, "annotations": anns,
            "categories": [dict(c) for c in categories]}


def match_returned(path: str | Path, selection: Sequence[PoolImage],
                   raw_images: Mapping[int, Mapping[str, Any]],
                   categories: Sequence[Mapping[str, Any]], *, round_no: int,
                   crowd_as_objects: bool = False) -> tuple[dict[str, Any], list[str]]:
    """Check the COCO file annotators returned for a round's selection and bring it to
    the pool's image ids and the labelled set's category ids.

    Images match a selected image by id and file name; a labelling tool that renumbered
    the ids (CVAT does) is matched by file name. Categories match by id and name, or by
    name when renumbered. Refused, one line each: an image that is not in the
    selection, a selected image missing, a changed size, a category the labelled set
    does not have, an undecodable mask.

    Returns:
        (the labels as COCO data under the pool's ids, notes on what was matched how).
    """
    path = Path(path)
    coco = load_coco(path)
    data = coco.dataset
    _image_ids(path, data["images"])
    notes: list[str] = []
    want = {im.id: im for im in selection}
    by_name: dict[str, list[PoolImage]] = {}
    for im in selection:
        by_name.setdefault(Path(im.file_name).name, []).append(im)
    ids = ", ".join(str(i) for i in sorted(want)[:8]) + (" …" if len(want) > 8 else "")
    image_map: dict[int, PoolImage] = {}
    renamed = 0
    for im in data["images"]:
        name = Path(str(im["file_name"])).name
        hit = want.get(int(im["id"]))
        if hit is None or Path(hit.file_name).name != name:
            cands = by_name.get(name, [])
            if len(cands) != 1:
                raise DataError(f"{path}: image {im['id']} ({im['file_name']!r}) is not in "
                                f"round {round_no}'s selection (ids {ids}); return the "
                                "selected images only")
            hit, renamed = cands[0], renamed + 1
        if hit.id in {p.id for p in image_map.values()}:
            raise DataError(f"{path}: image {im['id']} ({im['file_name']!r}) is selected "
                            f"image {hit.id} a second time")
        if (int(im.get("height", hit.height)), int(im.get("width", hit.width))) != \
                (hit.height, hit.width):
            raise DataError(f"{path}: image {im['id']} ({im['file_name']!r}) is "
                            f"{im.get('width')}x{im.get('height')}, the pool's is "
                            f"{hit.width}x{hit.height}")
        im.setdefault("height", hit.height)    # annToMask needs the size of a polygon
        im.setdefault("width", hit.width)
        image_map[int(im["id"])] = hit
    missing = sorted(set(want) - {p.id for p in image_map.values()})
    if missing:
        m = want[missing[0]]
        raise DataError(f"{path}: {len(missing)} of round {round_no}'s {len(want)} selected "
                        f"images are missing, e.g. image {m.id} ({m.file_name!r})")
    if renamed:
        notes.append(f"{renamed} image id(s) renumbered by the labelling tool, matched by "
                     "file name")
    mine = {int(c["id"]): c for c in categories}
    mine_by_name = {_name(c): int(c["id"]) for c in categories}
    cat_map: dict[int, int] = {}
    for c in data["categories"]:
        cid = int(c["id"])
        if cid in mine and _name(mine[cid]) == _name(c):
            cat_map[cid] = cid
        elif _name(c) in mine_by_name:
            cat_map[cid] = mine_by_name[_name(c)]
        else:
            raise DataError(f"{path}: category {cid} ({_name(c)!r}) is not a category of "
                            f"the labelled set ({_cat_list(list(categories))}); the "
                            "categories must not change during a campaign")
    if any(k != v for k, v in cat_map.items()):
        notes.append("category ids renumbered by the labelling tool, matched by name")
    anns: list[dict[str, Any]] = []
    n_crowd = 0
    for a in data["annotations"]:
        hit = image_map[int(a["image_id"])]
        try:
            m = coco.annToMask(a)
        except Exception as err:  # malformed polygon / RLE
            raise DataError(f"{path}: annotation {a.get('id')} (image {a['image_id']}): "
                            f"bad segmentation: {err}") from err
        if m.shape != (hit.height, hit.width):
            raise DataError(f"{path}: annotation {a.get('id')}: its mask is "
                            f"{m.shape[1]}x{m.shape[0]}, image {hit.id} is "
                            f"{hit.width}x{hit.height}")
        crowd = 0 if crowd_as_objects else int(bool(a.get("iscrowd", 0)))
        n_crowd += crowd
        anns.append({"id": len(anns) + 1, "image_id": hit.id,
                     "category_id": cat_map[int(a["category_id"])],
                     "segmentation": a["segmentation"], "iscrowd": crowd,
                     **{k: a[k] for k in ("area", "bbox") if k in a}})
    if n_crowd:
        notes.append(f"{n_crowd} annotation(s) have iscrowd 1 and are read as ignored "
                     "regions; pass --crowd-as-objects if they are objects (CVAT writes "
                     "its mask shapes so)")
    images = [image_entry(raw_images[im.id], im) for im in selection]
    return {"images": images, "annotations": anns,
            "categories": [dict(c) for c in categories]}, notes


def resize_masks(masks: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Masks at the network's size back to an image's own size (nearest neighbour).

    Args:
        masks: (K, h, w) bool.

    Returns:
        (K, height, width) bool.
    """
    if masks.shape[0] == 0:
        return np.zeros((0, height, width), dtype=bool)
    out = torch.nn.functional.interpolate(masks[:, None].float(), size=(height, width),
                                          mode="nearest-exact")
    return out[:, 0].bool().numpy()


def preannotations(preds: Sequence[ImagePrediction], images: Sequence[PoolImage],
                   raw_images: Mapping[int, Mapping[str, Any]],
                   categories: Sequence[Mapping[str, Any]],
                   label_to_cat: Mapping[int, int]) -> dict[str, Any]:
    """The selected images with the network's masks, as a COCO instances file for a
    labelling tool (CVAT "COCO 1.0", Label Studio's COCO import).

    One annotation per predicted mask (an RSIS mask's best class), resized to the
    image's own size, as compressed RLE (``counts`` a str) with ``iscrowd`` 0, its
    ``area``, ``bbox``, ``score`` and ``iou_pred``, under the pool's image ids and file
    names. Empty masks and masks of a class outside ``categories`` are left out.

    Args:
        preds: the predictions of ``images``, in the same order, at the network's size.
        images: the selected pool images.
        raw_images: pool image id → its entry in the pool JSON.
        categories: the categories to write (the pool's, or the labelled set's).
        label_to_cat: network label (1..C) → COCO category id.
    """
    from basis.data.pseudo import decode

    keep = {int(c["id"]) for c in categories}
    out_images, anns = [], []
    for pred, im in zip(preds, images):
        if pred.image_id != im.id:
            raise ValueError(f"prediction of image {pred.image_id} given for image {im.id}")
        out_images.append(image_entry(raw_images[im.id], im))
        idx = pred.primary()
        masks, labels = decode(pred, min_pixels=0, indices=idx)
        full = resize_masks(masks, im.height, im.width)
        for k, m, label in zip(idx, full, labels.tolist()):
            cat = label_to_cat.get(int(label))
            if cat is None or cat not in keep or not m.any():
                continue
            rle = encode_rle(m)
            area, bbox = _rle_area_bbox(rle)
            ann: dict[str, Any] = {"id": len(anns) + 1, "image_id": im.id,
                                   "category_id": cat, "segmentation": rle,
                                   "area": area, "bbox": bbox, "iscrowd": 0,
                                   "score": float(pred.scores[k])}
            if len(pred.iou_pred) == len(pred.scores):
                ann["iou_pred"] = float(pred.iou_pred[k])
            anns.append(ann)
    return {"images": out_images, "annotations": anns,
            "categories": [dict(c) for c in categories]}


class WeakPool(InstanceDataset):
    """The pool as the annotation network sees it: each image read as RGB and resized to
    ``size``; its labels the IL+C counts in the network's labels (W-RSIS's input, one
    label per instance, by class id), empty without counts (RSIS). There are no masks:
    ``masks`` is (0, size, size), so predict it with ``with_iou_true=False``.

    Args:
        images: the pool images, in order.
        size: the network's square input side.
        label_of: COCO category id → the network's label (1..C).
    """

    def __init__(self, images: Sequence[PoolImage], size: int,
                 label_of: Mapping[int, int]) -> None:
        self.images = list(images)
        self.ids = [im.id for im in self.images]
        self.size = int(size)
        self.label_of = dict(label_of)
        self.transform = None

    def load(self, i: int) -> Sample:
        im = self.images[i]
        image = read_rgb(Path(im.path))
        image = TF.resize(image, [self.size, self.size], antialias=True).clamp_(0, 1)
        labels = [self.label_of[c] for c, n in (im.counts or ()) for _ in range(n)]
        s = self.size
        return Sample(image=image, masks=torch.zeros(0, s, s, dtype=torch.bool),
                      labels=torch.tensor(sorted(labels), dtype=torch.int64),
                      ignore=torch.zeros(s, s, dtype=torch.bool), image_id=im.id)

    def subset(self, ids: Sequence[int]) -> "WeakPool":
        by_id = {im.id: im for im in self.images}
        return WeakPool([by_id[int(i)] for i in ids], self.size, self.label_of)

    def source(self, i: int) -> str:
        return self.images[i].path
