"""Evaluation time: `basis.metrics.ap.evaluate_ap` vs plain pycocotools COCOeval.

Both start from the same ground-truth `Sample`s and the same `ImagePrediction`s (RLEs,
labels, scores) and end at AP@0.5. The floor is what a user would write by hand: COCO
ground-truth and detection dicts, ``loadRes``, ``COCOeval(..., "segm")``, ``evaluate``,
``accumulate``, ``summarize``, ``stats[1]``. The two must give the same AP (asserted to
1e-9); the ratio is evaluate_ap time / plain COCOeval time.

The predictions are the ground truth perturbed (shifted, grown or shrunk, some missed,
some mislabelled, a few false positives, scores correlated with quality), so AP lies
well inside (0, 1) and every branch of the matching is exercised. The images have no
void (``ignore_band=0``): stock COCOeval has no per-pixel ignore, and `evaluate_ap`'s
void handling (crowd regions for every class) is exactly what a plain script would
have to add by hand — with void both would be equal only if the script copied it.

    python benchmarks/bench_eval.py            # 1000 images of 64 px, 5 repeats
    python benchmarks/bench_eval.py --tiny     # seconds (CI smoke)
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved, machine_line, med, median_ratio, ratio_line  # noqa: E402

import numpy as np  # noqa: E402
import pycocotools.mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402
from scipy import ndimage  # noqa: E402

from basis.data.synthetic import SyntheticConfig, SyntheticShapes  # noqa: E402
from basis.metrics.ap import encode_masks, evaluate_ap  # noqa: E402
from basis.types import ImagePrediction, Sample  # noqa: E402


def synthetic_predictions(samples: list[Sample], n_classes: int, seed: int = 0
                          ) -> list[ImagePrediction]:
    """Perturbed ground truth: per object a shifted, dilated or eroded copy (10 % missed,
    10 % with a wrong class), plus 0–2 random false-positive boxes per image."""
    rng = np.random.default_rng(seed)
    preds = []
    for s in samples:
        h, w = s.ignore.shape
        masks, labels, scores = [], [], []
        for m, lab in zip(s.masks.numpy(), s.labels.tolist()):
            if rng.random() < 0.1:
                continue
            dy, dx = rng.integers(-3, 4, size=2)
            p = np.roll(m, (int(dy), int(dx)), axis=(0, 1))
            grow = int(rng.integers(-1, 3))
            if grow > 0:
                p = ndimage.binary_dilation(p, iterations=grow)
            elif grow < 0:
                p = ndimage.binary_erosion(p, iterations=-grow)
            if not p.any():
                continue
            iou = (p & m).sum() / max((p | m).sum(), 1)
            if rng.random() < 0.1:
                lab = int(rng.integers(1, n_classes + 1))
            masks.append(p)
            labels.append(int(lab))
            scores.append(float(np.clip(0.6 * iou + 0.4 * rng.random(), 0.0, 1.0)))
        for _ in range(int(rng.integers(0, 3))):
            y0, x0 = rng.integers(0, h - 8), rng.integers(0, w - 8)
            y1, x1 = y0 + rng.integers(4, h // 3), x0 + rng.integers(4, w // 3)
            p = np.zeros((h, w), bool)
            p[y0:y1, x0:x1] = True
            masks.append(p)
            labels.append(int(rng.integers(1, n_classes + 1)))
            scores.append(float(0.5 * rng.random()))
        rles = encode_masks(np.stack(masks)) if masks else []
        preds.append(ImagePrediction(image_id=int(s.image_id), height=h, width=w, rles=rles,
                                     labels=labels, scores=scores))
    return preds


def plain_cocoeval(samples: list[Sample], preds: list[ImagePrediction], n_classes: int) -> float:
    """AP@0.5 as a plain pycocotools script computes it: ``COCOeval.stats[1]``."""
    images, anns = [], []
    for s in samples:
        h, w = s.ignore.shape
        images.append({"id": int(s.image_id), "height": h, "width": w})
        masks = s.masks.numpy()
        if masks.shape[0] == 0:
            continue
        rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
        for rle, lab in zip(rles, s.labels.tolist()):
            anns.append({"id": len(anns) + 1, "image_id": int(s.image_id),
                         "category_id": int(lab), "segmentation": rle,
                         "area": float(mask_utils.area(rle)), "iscrowd": 0,
                         "bbox": mask_utils.toBbox(rle).tolist()})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": c, "name": str(c)} for c in range(1, n_classes + 1)]}
    dets = [{"image_id": p.image_id, "category_id": lab, "segmentation": rle, "score": sc}
            for p in preds for rle, lab, sc in zip(p.rles, p.labels, p.scores)]
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="run in seconds (CI smoke)")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args(argv)
    n_images = 40 if args.tiny else args.images
    repeats = args.repeats or (2 if args.tiny else 5)
    print(machine_line("cpu"))
    cfg = SyntheticConfig(image_size=args.size, n_classes=args.classes, ignore_band=0)
    data = SyntheticShapes(cfg, 0, range(n_images))
    samples = [data[i] for i in range(n_images)]
    assert not any(bool(s.ignore.any()) for s in samples)
    preds = synthetic_predictions(samples, args.classes)
    n_gt = sum(s.n_objects for s in samples)
    n_dt = sum(len(p.rles) for p in preds)
    print(f"setup: {n_images} synthetic images of {args.size} px, {args.classes} classes, "
          f"{n_gt} objects, {n_dt} detections, no void; {repeats} repeats (interleaved), medians")

    got: dict[str, float] = {}

    def ours() -> None:
        got["ours"] = evaluate_ap(samples, preds, n_classes=args.classes)["ap50"]

    def plain() -> None:
        got["plain"] = plain_cocoeval(samples, preds, args.classes)

    ours()
    plain()                                   # warm-up, and the AP check first
    if abs(got["ours"] - got["plain"]) > 1e-9:
        raise AssertionError(f"AP differs: evaluate_ap {got['ours']!r} vs COCOeval "
                             f"stats[1] {got['plain']!r}")
    print(f"AP@0.5: evaluate_ap {got['ours']:.12f}  plain COCOeval stats[1] "
          f"{got['plain']:.12f}  (equal to 1e-9)")
    f, s = interleaved(plain, ours, repeats)
    assert abs(got["ours"] - got["plain"]) <= 1e-9
    print(f"  evaluate_ap {med(s):.3f} s ({n_images / med(s):.0f} img/s)   plain COCOeval "
          f"{med(f):.3f} s ({n_images / med(f):.0f} img/s)")
    print(ratio_line("evaluate_ap_vs_plain_cocoeval", median_ratio(s, f),
                     "evaluate_ap time / plain COCOeval time, same AP; < 1 is faster"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
