"""``basis data check`` and ``basis data synth``: validate a dataset, write a synthetic one.

Pure functions: `check` returns a report dict, `render_check` turns it into text,
`synth` writes files and returns a summary. The command line lives in ``jobs/cli.py``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from basis.data.base import DataError, ImageStats, InstanceDataset
from basis.data.coco import COCOInstances, find_image_root
from basis.data.sbd import SBDInstances, find_sbd_root
from basis.data.splits import TEST_ID_OFFSET
from basis.data.synthetic import SyntheticConfig, SyntheticShapes
from basis.data.voc import SPLIT_DIR, VOCInstances, find_voc_root, write_voc

FORMATS = ("voc", "sbd", "coco", "synthetic")
SYNTH_MARKER = "basis_synthetic.json"
# Object area as a fraction of the image; the last bin is closed at 1.
AREA_BINS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
# COCO's absolute size classes, in pixels.
SMALL, MEDIUM = 32 ** 2, 96 ** 2
# Objects (classes) per image are counted 0, 1, …, HIST_CAP - 1 and "HIST_CAP+".
HIST_CAP = 10


def detect_format(path: str | Path) -> str:
    """The format of ``path`` from its layout: a ``.json`` file is COCO, a folder with
    the synthetic marker is synthetic, ``SegmentationObject/`` is VOC, ``inst/`` is SBD."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: does not exist")
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco"
        raise DataError(f"{path}: a file but not a COCO .json; pass a dataset folder or a "
                        "COCO annotation file")
    voc = find_voc_root(path)
    if (voc / SYNTH_MARKER).is_file():
        return "synthetic"
    if (voc / "SegmentationObject").is_dir() or (voc / "JPEGImages").is_dir():
        return "voc"
    if (path / "inst").is_dir() or (path / "dataset" / "inst").is_dir():
        return "sbd"
    raise DataError(f"{path}: cannot tell the dataset format (no SegmentationObject/ for VOC, "
                    "no inst/ or dataset/inst/ for SBD, not a .json for COCO); pass --format")


def open_splits(path: str | Path, fmt: str | None = None,
                images: str | Path | None = None) -> tuple[str, dict[str, InstanceDataset]]:
    """The format and the datasets (split name → dataset) found at ``path``."""
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    if fmt in ("voc", "synthetic"):
        root = find_voc_root(path)
        names = sorted(p.stem for p in (root / SPLIT_DIR).glob("*.txt"))
        if not names:
            raise DataError(f"{root / SPLIT_DIR}: no split files (*.txt)")
        kw: dict[str, Any] = {}
        if fmt == "synthetic":
            n_classes = int(read_marker(root)["config"]["n_classes"])
            kw = {"n_classes": n_classes,
                  "class_names": [f"class{c}" for c in range(1, n_classes + 1)]}
        return fmt, {s: VOCInstances(root, s, **kw) for s in names}
    if fmt == "sbd":
        root = find_sbd_root(path)
        names = [s for s in ("train", "val") if (root / f"{s}.txt").is_file()]
        if not names:
            raise DataError(f"{root}: no train.txt or val.txt")
        cls = (root / "cls").is_dir()
        return fmt, {s: SBDInstances(root, s, check_classes=cls) for s in names}
    ds = COCOInstances(path, images)
    if images is None:   # an images/ folder beside the JSON, then the JSON's own folder
        ds.image_root = find_image_root(path, [str(im.get("file_name", ""))
                                               for im in ds.coco.dataset["images"]])
    return fmt, {"all": ds}


def check(path: str | Path, fmt: str | None = None, images: str | Path | None = None,
          max_errors: int = 20) -> dict[str, Any]:
    """Read every image of the dataset at ``path`` and summarise it.

    Structural problems (missing folder or split file, unreadable JSON) raise `DataError`;
    per-image problems are collected in ``errors`` (each names its file), at most
    ``max_errors`` of them kept, all counted in ``n_errors``.

    Returns:
        dict: format, path, splits (name → images), n_images, n_objects,
        objects_per_image, classes_per_image, mean_object_area, empty_images,
        objects_hist / classes_hist (images with 0, 1, … objects / classes: count, the
        last key ``"10+"``), area_hist (list of (lo, hi, count)), size_classes
        (small/medium/large counts), per_class (class name → instances), void (the void
        pixels outside every object mask — all a VOC file can hold — as a share of all
        pixels ``of_image`` and of the object ∪ void pixels ``of_labelled``; the share
        of object pixels also marked void, ``in_objects``, is 0 for files and counts
        only for in-memory data), image_sizes, n_errors, errors, and for a
        synthetic set ``generator`` (its config and the targets it was drawn for).
    """
    fmt, splits = open_splits(path, fmt, images)
    seen: set[int] = set()
    stats: list[ImageStats] = []
    errors: list[str] = []
    n_errors = 0
    # pixel counts: all, void, object (union of the masks), void inside an object
    px = np.zeros(4, dtype=np.int64)
    class_names: tuple[str, ...] = ()
    for ds in splits.values():
        class_names = tuple(getattr(ds, "class_names", ())) or class_names
        for i, image_id in enumerate(ds.ids):
            if image_id in seen:
                continue
            seen.add(image_id)
            try:
                sample = ds.load(i)
                stats.append(ImageStats.of(sample))
            except DataError as err:
                n_errors += 1
                if len(errors) < max_errors:
                    errors.append(str(err))
                continue
            fg = sample.masks.any(0)
            px += (sample.ignore.numel(), int(sample.ignore.sum()), int(fg.sum()),
                   int((sample.ignore & fg).sum()))
    areas = np.asarray([a for s in stats for a in s.object_areas], dtype=np.float64)
    pixels = np.asarray([a * s.height * s.width for s in stats for a in s.object_areas])
    hist, _ = np.histogram(areas, bins=AREA_BINS)
    per_class: dict[str, int] = {}
    for s in stats:
        for c, n in s.weak.items():
            name = class_names[c - 1] if 0 < c <= len(class_names) else str(c)
            per_class[name] = per_class.get(name, 0) + n
    n = len(stats)
    void = int(px[1] - px[3])  # void in no object: what a VOC file can hold
    report: dict[str, Any] = {
        "format": fmt, "path": str(path),
        "splits": {k: len(v) for k, v in splits.items()},
        "n_images": n,
        "n_objects": int(sum(s.n_objects for s in stats)),
        "objects_per_image": float(np.mean([s.n_objects for s in stats])) if n else 0.0,
        "classes_per_image": float(np.mean([s.n_classes for s in stats])) if n else 0.0,
        "mean_object_area": float(areas.mean()) if areas.size else 0.0,
        "empty_images": int(sum(s.n_objects == 0 for s in stats)),
        "objects_hist": count_hist([s.n_objects for s in stats]),
        "classes_hist": count_hist([s.n_classes for s in stats]),
        "void": {"of_image": float(void / px[0]) if px[0] else 0.0,
                 "of_labelled": float(void / (void + px[2])) if void + px[2] else 0.0,
                 "in_objects": float(px[3] / px[2]) if px[2] else 0.0},
        "area_hist": [(AREA_BINS[k], AREA_BINS[k + 1], int(hist[k])) for k in range(len(hist))],
        "size_classes": {"small": int((pixels < SMALL).sum()),
                         "medium": int(((pixels >= SMALL) & (pixels < MEDIUM)).sum()),
                         "large": int((pixels >= MEDIUM).sum())},
        "per_class": dict(sorted(per_class.items(), key=lambda kv: -kv[1])),
        "image_sizes": sorted({(s.height, s.width) for s in stats})[:5],
        "n_errors": n_errors, "errors": errors,
    }
    if fmt == "synthetic":
        report["generator"] = read_marker(find_voc_root(path))
    return report


def count_hist(counts: list[int], cap: int = HIST_CAP) -> dict[str, int]:
    """Images per count: ``{"0": …, "1": …, …, f"{cap}+": …}``, empty bins left out."""
    hist = np.bincount(np.minimum(np.asarray(counts, dtype=np.int64), cap), minlength=cap + 1)
    return {(f"{k}+" if k == cap else str(k)): int(c) for k, c in enumerate(hist) if c}


def _render_hist(hist: dict[str, int]) -> str:
    total = sum(hist.values()) or 1
    return "  ".join(f"{k}: {c} ({100 * c / total:.0f}%)" for k, c in hist.items())


def read_marker(root: Path) -> dict[str, Any]:
    """The generator record `synth` leaves in a synthetic dataset's root."""
    marker = root / SYNTH_MARKER
    try:
        info = json.loads(marker.read_text())
        info["config"]["n_classes"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"{marker}: missing or unreadable synthetic marker: {err!r}") from err
    return info


def render_check(r: dict[str, Any]) -> str:
    """The `check` report as text."""
    lines = [f"{r['path']}: {r['format']} dataset",
             "splits: " + ", ".join(f"{k} {v}" for k, v in r["splits"].items()),
             f"images: {r['n_images']} (unique ids), objects: {r['n_objects']}, "
             f"empty images (kept, K=0): {r['empty_images']}",
             f"objects/image: {r['objects_per_image']:.2f}   classes/image: "
             f"{r['classes_per_image']:.2f}   mean object area: "
             f"{100 * r['mean_object_area']:.1f}% of the image"]
    if r.get("objects_hist"):
        lines.append("  images with K objects:  " + _render_hist(r["objects_hist"]))
        lines.append("  images with C classes:  " + _render_hist(r["classes_hist"]))
    void = r.get("void")
    if void:
        lines.append(f"void (255): {100 * void['of_image']:.1f}% of the pixels, "
                     f"{100 * void['of_labelled']:.1f}% of the object ∪ void pixels"
                     + (f"; {100 * void['in_objects']:.1f}% of the object pixels are void too"
                        if void["in_objects"] else ""))
    gen = r.get("generator")
    if gen:
        cfg = gen.get("config", {})
        lines.append(f"generator targets: objects/image {cfg.get('mean_objects')} (at most "
                     f"{cfg.get('max_objects')}), classes/image {cfg.get('mean_classes')}, "
                     f"seed {gen.get('seed')}, {cfg.get('image_size')} px, version "
                     f"{cfg.get('version', 1)}")
    sc = r["size_classes"]
    lines.append(f"object sizes (COCO, pixels): small <32² {sc['small']}, medium "
                 f"{sc['medium']}, large ≥96² {sc['large']}")
    lines.append("object area (fraction of the image):")
    top = max([c for _, _, c in r["area_hist"]] + [1])
    for lo, hi, c in r["area_hist"]:
        bar = "#" * int(round(40 * c / top))
        lines.append(f"  {100 * lo:5.1f}%–{100 * hi:5.1f}% |{bar:<40s}| {c}")
    if r["per_class"]:
        lines.append("instances per class: " + ", ".join(
            f"{k} {v}" for k, v in r["per_class"].items()))
    if r["image_sizes"]:
        lines.append("image sizes (H×W, first 5): " + ", ".join(
            f"{h}×{w}" for h, w in r["image_sizes"]))
    if r["n_errors"]:
        lines.append(f"ERRORS: {r['n_errors']} image(s) failed" + (
            f" (first {len(r['errors'])} shown)" if len(r["errors"]) < r["n_errors"] else "")
            + ":")
        lines += [f"  {e}" for e in r["errors"]]
    else:
        lines.append("no errors")
    return "\n".join(lines)


def synth(out: str | Path, n: int, size: int = 64, seed: int = 0, n_val: int = 0,
          **overrides: Any) -> dict[str, Any]:
    """Write a synthetic dataset in VOC layout, readable by `VOCInstances`.

    ``train`` holds images 0..n-1 and ``val`` images from 1_000_000 (as
    `synthetic_splits`), so the files equal ``synthetic_splits(cfg, seed, n, n_val)``
    up to JPEG loss in the images and void inside objects (see `encode_voc`). A
    ``basis_synthetic.json`` marker records the generator config.

    Args:
        overrides: further `SyntheticConfig` fields.

    Returns:
        dict with the root, split sizes and the config.
    """
    known = {f.name for f in fields(SyntheticConfig)}
    bad = set(overrides) - known
    if bad:
        raise ValueError(f"unknown SyntheticConfig field(s): {sorted(bad)}")
    if n < 1 or n_val < 0:
        raise ValueError(f"need n >= 1 and n_val >= 0, got n={n}, n_val={n_val}")
    cfg = SyntheticConfig(image_size=size, **overrides)
    train = SyntheticShapes(cfg, seed, range(n))
    val = SyntheticShapes(cfg, seed, range(TEST_ID_OFFSET, TEST_ID_OFFSET + n_val))
    root = Path(out)
    counts = write_voc(root, {"train": (train[i] for i in range(len(train))),
                              "val": (val[i] for i in range(len(val)))})
    info = {"generator": "basis.data.synthetic", "seed": seed, "config": asdict(cfg),
            "splits": counts}
    (root / SYNTH_MARKER).write_text(json.dumps(info, indent=1))
    return {"root": str(root), **info}
