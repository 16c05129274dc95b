"""Instance-segmentation AP at one IoU threshold (the paper reports AP@0.5).

Two implementations:

* :func:`evaluate_ap` runs stock pycocotools ``COCOeval(..., "segm")`` on COCO objects
  built in memory, the way the RSIS code evaluates (``stats[1]``: AP at IoU 0.5, all
  areas, 101-point interpolated precision).
* :func:`voc_ap_r` is an independent numpy AP^r (VOC/SDS style: void pixels removed
  from every IoU, all-points interpolation) used to cross-check the first.

VOC void pixels (``Sample.ignore``) and stock COCOeval
-------------------------------------------------------
COCOeval knows no per-pixel ignore mask, so the void region of an image is added as
one extra ground-truth annotation with ``iscrowd=1`` **for every category**. A
detection that matches no real object but covers the void region enough is then
ignored instead of counted as a false positive. Every category, not only those
present, because VOC marks as void both object boundaries and objects too hard to
label, whose class is unknown: a detection of an absent class on such a region
cannot be called wrong. The crowd annotations never add a class to the mean:
COCOeval skips a category with no non-crowd ground truth.

The approximations, both documented because they make the numbers differ slightly
from a true VOC evaluation (and from :func:`voc_ap_r`):

1. Against a crowd region COCOeval measures |det ∩ void| / |det|, not IoU, so "on
   void" means at least ``iou_thr`` of the detection's pixels are void.
2. Against a real object COCOeval's IoU keeps the detection's void pixels in the
   union (VOC removes them), so a detection spilling over the void boundary band
   gets a slightly lower IoU than under VOC rules.

Approximation 2 can be removed with ``void_iou="exclude"``: a small `COCOeval`
subclass (one method, `computeIoU`, pycocotools itself untouched) then measures a
detection against real objects after removing its void pixels (and the objects'),
the VOC rule, while the crowd test (1) still sees the whole detection. The default
``"union"`` is stock COCOeval. On VOC-like data (a void band around every object)
the two differ a lot for small objects: a prediction covering half of a 5-px band
around a 20×20 object has IoU 0.67 under ``"union"`` and 1.0 under ``"exclude"``.
:func:`voc_ap_r` takes the same switch, which is how the two implementations are
cross-checked.
"""
from __future__ import annotations

import contextlib
import io
import math
from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from basis.types import ImagePrediction, Sample

# pycocotools 2.0.11 + numpy 2: mask.area() on more than 255 RLEs in one call
# raises OverflowError (a uint8 length); stay below that.
_AREA_CHUNK = 255


def encode_masks(masks: np.ndarray) -> list[dict]:
    """RLE-encode masks with pycocotools, ``counts`` as str (JSON-safe).

    Args:
        masks: (K, H, W) bool/uint8 array.

    Returns:
        K RLE dicts ``{"size": [H, W], "counts": str}``.
    """
    masks = np.asarray(masks)
    if masks.shape[0] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


def rle_areas(rles: Sequence[dict]) -> np.ndarray:
    """Pixel areas of RLEs, computed in chunks (see ``_AREA_CHUNK``).

    Args:
        rles: N RLE dicts.

    Returns:
        (N,) float64 areas.
    """
    out = [np.asarray(mask_utils.area(list(rles[i:i + _AREA_CHUNK])), dtype=np.float64)
           for i in range(0, len(rles), _AREA_CHUNK)]
    return np.concatenate(out) if out else np.zeros(0)


def _bboxes(rles: Sequence[dict]) -> np.ndarray:
    out = [np.asarray(mask_utils.toBbox(list(rles[i:i + _AREA_CHUNK])), dtype=np.float64)
           for i in range(0, len(rles), _AREA_CHUNK)]
    return np.concatenate(out).reshape(-1, 4) if out else np.zeros((0, 4))


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_preds(preds: Sequence[ImagePrediction], sizes: dict[int, tuple[int, int]],
                 n_classes: int | None) -> None:
    seen: set[int] = set()
    for p in preds:
        if p.image_id in seen:
            raise ValueError(f"preds: image_id {p.image_id} appears twice")
        seen.add(p.image_id)
        if p.image_id not in sizes:
            raise ValueError(f"preds: image_id {p.image_id} has no sample")
        if (p.height, p.width) != sizes[p.image_id]:
            raise ValueError(
                f"preds: image {p.image_id} is {p.height}x{p.width} but its sample is "
                f"{sizes[p.image_id][0]}x{sizes[p.image_id][1]}"
            )
        if not len(p.rles) == len(p.labels) == len(p.scores):
            raise ValueError(
                f"preds: image {p.image_id} has {len(p.rles)} rles, {len(p.labels)} labels, "
                f"{len(p.scores)} scores"
            )
        if n_classes is not None:
            bad = [c for c in p.labels if not 1 <= int(c) <= n_classes]
            if bad:
                raise ValueError(
                    f"preds: image {p.image_id} has labels {bad} outside 1..{n_classes}")


class _VoidExcludingCOCOeval(COCOeval):
    """COCOeval whose IoU against a non-crowd object uses the void-clipped detection.

    Each detection annotation carries ``clipped``: its RLE with the image's void
    pixels removed. Crowd (void) columns keep stock COCOeval's value.
    """

    def computeIoU(self, imgId, catId):  # noqa: N802 (pycocotools' name)
        ious = super().computeIoU(imgId, catId)
        if len(ious) == 0:
            return ious
        gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        # The same order and cut as COCOeval.computeIoU.
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")[: self.params.maxDets[-1]]
        dt = [dt[i] for i in order]
        real = [j for j, g in enumerate(gt) if not g["iscrowd"]]
        if real:
            ious = np.array(ious, dtype=np.float64, copy=True)
            ious[:, real] = mask_utils.iou([d["clipped"] for d in dt],
                                           [gt[j]["segmentation"] for j in real], [0] * len(real))
        return ious


def _new_coco(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def evaluate_ap(samples: Iterable[Sample], preds: Sequence[ImagePrediction], n_classes: int,
                iou_thr: float = 0.5, void_iou: str = "union") -> dict:
    """Mask AP at one IoU threshold with stock pycocotools COCOeval.

    ``samples`` may be a generator: each is RLE-encoded on arrival and its dense
    masks dropped. Images without objects are kept (their detections are false
    positives unless they lie on void). See the module docstring for how void
    pixels are handled and what that approximates.

    Args:
        samples: the ground truth, one `Sample` per image (masks (K, H, W) bool,
            labels (K,) in 1..C, ignore (H, W) bool).
        preds: one `ImagePrediction` per image to score (missing images count as
            having no detections); every image_id must be among the samples.
        n_classes: C, the number of categories (ids 1..C).
        iou_thr: the IoU threshold (0.5 for the paper's AP@0.5).
        void_iou: ``"union"`` (stock COCOeval: a detection's void pixels stay in
            its union with an object) or ``"exclude"`` (VOC rule: void pixels are
            removed from both before the IoU with an object).

    Returns:
        ``{"ap50": mean AP over categories with ground truth at ``iou_thr`` (the
        value of ``COCOeval.stats[1]`` when iou_thr=0.5) in [0, 1], NaN when no
        image has any object; "per_class": {class id: AP, NaN for a class without
        ground truth}; "iou_thr": iou_thr}``. No detections at all gives 0.0.
    """
    if not 0.0 < iou_thr <= 1.0:
        raise ValueError(f"iou_thr must be in (0, 1], got {iou_thr}")
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    if void_iou not in ("union", "exclude"):
        raise ValueError(f"void_iou must be 'union' or 'exclude', got {void_iou!r}")
    exclude = void_iou == "exclude"
    voids: dict[int, dict] = {}
    images: list[dict] = []
    gt_anns: list[dict] = []
    sizes: dict[int, tuple[int, int]] = {}
    for s in samples:
        iid = int(s.image_id)
        if iid in sizes:
            raise ValueError(f"samples: image_id {iid} appears twice")
        masks = _np(s.masks).astype(bool)
        labels = _np(s.labels).astype(np.int64).reshape(-1)
        ignore = _np(s.ignore).astype(bool)
        h, w = ignore.shape
        sizes[iid] = (h, w)
        images.append({"id": iid, "height": h, "width": w})
        bad = [int(c) for c in labels if not 1 <= c <= n_classes]
        if bad:
            raise ValueError(f"samples: image {iid} has labels {bad} outside 1..{n_classes}")
        rles = encode_masks(masks & ~ignore if exclude else masks)
        for rle, lab, area, box in zip(rles, labels, rle_areas(rles), _bboxes(rles)):
            gt_anns.append({"image_id": iid, "category_id": int(lab), "segmentation": rle,
                            "area": float(area), "bbox": box.tolist(), "iscrowd": 0})
        if ignore.any():
            (void,) = encode_masks(ignore[None])
            voids[iid] = void
            area = float(rle_areas([void])[0])
            box = _bboxes([void])[0].tolist()
            for cid in range(1, n_classes + 1):
                gt_anns.append({"image_id": iid, "category_id": cid, "segmentation": void,
                                "area": area, "bbox": box, "iscrowd": 1})
    _check_preds(preds, sizes, n_classes)
    per_class: dict[int, float] = {c: math.nan for c in range(1, n_classes + 1)}
    if not any(a["iscrowd"] == 0 for a in gt_anns):
        return {"ap50": math.nan, "per_class": per_class, "iou_thr": iou_thr}

    for i, a in enumerate(gt_anns, start=1):
        a["id"] = i
    categories = [{"id": c, "name": str(c)} for c in range(1, n_classes + 1)]
    coco_gt = _new_coco({"images": images, "annotations": gt_anns, "categories": categories})

    dt_anns: list[dict] = []
    max_per_image = 0
    for p in preds:
        max_per_image = max(max_per_image, len(p.rles))
        rles = [dict(r) for r in p.rles]
        clipped = rles
        if exclude and rles and p.image_id in voids:
            void = mask_utils.decode(voids[p.image_id]).astype(bool)
            dense = mask_utils.decode(rles).transpose(2, 0, 1).astype(bool)
            clipped = encode_masks(dense & ~void[None])
        for rle, clip, lab, score, area, box in zip(rles, clipped, p.labels, p.scores,
                                                    rle_areas(rles), _bboxes(rles)):
            dt_anns.append({"id": len(dt_anns) + 1, "image_id": int(p.image_id),
                            "category_id": int(lab), "segmentation": rle, "clipped": clip,
                            "area": float(area), "bbox": box.tolist(), "score": float(score),
                            "iscrowd": 0})
    # Built directly rather than with COCO.loadRes, which crashes on an empty list.
    coco_dt = _new_coco({"images": images, "annotations": dt_anns, "categories": categories})

    ev = (_VoidExcludingCOCOeval if exclude else COCOeval)(coco_gt, coco_dt, "segm")
    ev.params.iouThrs = np.array([iou_thr], dtype=np.float64)
    ev.params.areaRng = [[0.0, 1e10]]
    ev.params.areaRngLbl = ["all"]
    # Large enough never to drop a detection (stats[1] uses 100).
    ev.params.maxDets = [max(100, max_per_image)]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][0, :, :, 0, -1]  # (R=101, K)
    for k, cid in enumerate(ev.params.catIds):
        col = prec[:, k]
        per_class[int(cid)] = float(col.mean()) if (col > -1).all() else math.nan
    valid = prec[prec > -1]
    ap = float(valid.mean()) if valid.size else math.nan
    return {"ap50": ap, "per_class": per_class, "iou_thr": iou_thr}


def _all_points_ap(tp: np.ndarray, fp: np.ndarray, n_gt: int) -> float:
    """VOC 2010+ AP: area under the PR curve made monotone, at every recall step."""
    if tp.size == 0:
        return 0.0
    ctp, cfp = np.cumsum(tp), np.cumsum(fp)
    rec = ctp / n_gt
    prec = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def voc_ap_r(samples: Iterable[Sample], preds: Sequence[ImagePrediction],
             iou_thr: float = 0.5, n_classes: int | None = None,
             void_iou: str = "exclude") -> dict:
    """Independent VOC-style AP^r, to cross-check :func:`evaluate_ap`.

    Per image and class, detections in descending score order are greedily matched
    to the unmatched ground-truth object of the same class with the highest IoU, if
    that IoU ≥ ``iou_thr``; IoU is computed with numpy on decoded masks, by default
    with void pixels removed from both masks (the VOC rule). An unmatched detection with at least
    ``iou_thr`` of its pixels on void is ignored (mirroring the crowd rule of
    :func:`evaluate_ap`); any other is a false positive. Per class, detections of
    all images are sorted by score and AP is the all-points interpolated area under
    the precision/recall curve.

    Expected differences from :func:`evaluate_ap`: all-points vs 101-point
    interpolation, and void pixels in the union there (see the module docstring).

    Args:
        samples: ground truth (may be a generator; one image is decoded at a time).
        preds: predictions; every image_id must be among the samples.
        iou_thr: IoU threshold.
        n_classes: C; when None, the classes seen in the ground truth and predictions.
        void_iou: ``"exclude"`` (VOC rule) or ``"union"`` (keep void pixels in the
            IoU, as stock COCOeval does; for cross-checking :func:`evaluate_ap`).

    Returns:
        ``{"ap50": mean AP over classes with ground truth (NaN if none),
        "per_class": {class id: AP or NaN}, "iou_thr": iou_thr}``.
    """
    if not 0.0 < iou_thr <= 1.0:
        raise ValueError(f"iou_thr must be in (0, 1], got {iou_thr}")
    if void_iou not in ("union", "exclude"):
        raise ValueError(f"void_iou must be 'union' or 'exclude', got {void_iou!r}")
    by_id = {int(p.image_id): p for p in preds}
    if len(by_id) != len(preds):
        raise ValueError("preds: an image_id appears twice")
    n_gt: dict[int, int] = defaultdict(int)
    scores: dict[int, list[float]] = defaultdict(list)
    flags: dict[int, list[int]] = defaultdict(list)  # 1 TP, 0 FP, -1 ignored
    sizes: dict[int, tuple[int, int]] = {}
    for s in samples:
        iid = int(s.image_id)
        gmask = _np(s.masks).astype(bool)
        glab = _np(s.labels).astype(np.int64).reshape(-1)
        void = _np(s.ignore).astype(bool)
        sizes[iid] = void.shape
        for lab in glab.tolist():
            n_gt[lab] += 1
        p = by_id.get(iid)
        if p is None or not p.rles:
            continue
        if (p.height, p.width) != void.shape:
            raise ValueError(f"preds: image {iid} is {p.height}x{p.width}, sample {void.shape}")
        dmask = mask_utils.decode([dict(r) for r in p.rles]).transpose(2, 0, 1).astype(bool)
        dlab = np.asarray(p.labels, dtype=np.int64)
        dsc = np.asarray(p.scores, dtype=np.float64)
        keep = ~void if void_iou == "exclude" else np.ones_like(void)
        hw = void.size
        df = (dmask & keep).reshape(len(dlab), hw).astype(np.float64)
        gf = (gmask & keep).reshape(len(glab), hw).astype(np.float64)
        inter = df @ gf.T
        union = df.sum(1)[:, None] + gf.sum(1)[None, :] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        d_area = dmask.reshape(len(dlab), hw).sum(1)
        on_void = (dmask & void).reshape(len(dlab), hw).sum(1) / np.maximum(d_area, 1)
        taken = np.zeros(len(glab), dtype=bool)
        for d in np.argsort(-dsc, kind="mergesort"):
            c = int(dlab[d])
            cand = np.where((glab == c) & ~taken & (iou[d] >= iou_thr))[0]
            if cand.size:
                taken[cand[np.argmax(iou[d, cand])]] = True
                flag = 1
            elif d_area[d] > 0 and on_void[d] >= iou_thr:
                flag = -1
            else:
                flag = 0
            scores[c].append(float(dsc[d]))
            flags[c].append(flag)
    missing = set(by_id) - set(sizes)
    if missing:
        raise ValueError(f"preds: image_ids {sorted(missing)} have no sample")
    classes = (list(range(1, n_classes + 1)) if n_classes is not None
               else sorted(set(n_gt) | set(scores)))
    per_class: dict[int, float] = {}
    for cid in classes:
        if n_gt.get(cid, 0) == 0:
            per_class[cid] = math.nan
            continue
        sc = np.asarray(scores.get(cid, []), dtype=np.float64)
        fl = np.asarray(flags.get(cid, []), dtype=np.int64)
        fl = fl[np.argsort(-sc, kind="mergesort")]
        fl = fl[fl >= 0]  # ignored detections leave the ranking
        per_class[cid] = _all_points_ap((fl == 1).astype(float), (fl == 0).astype(float),
                                        n_gt[cid])
    vals = [v for v in per_class.values() if not math.isnan(v)]
    return {"ap50": float(np.mean(vals)) if vals else math.nan, "per_class": per_class,
            "iou_thr": iou_thr}
