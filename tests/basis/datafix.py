"""Builders of tiny datasets in the real file formats (VOC PNGs, SBD .mat, COCO JSON)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from basis.data.imageio import write_index_png, write_rgb
from basis.data.sbd import write_gtcls, write_gtinst

H, W = 32, 40


def voc_maps() -> tuple[np.ndarray, np.ndarray]:
    """An object map with two instances (classes 15 and 7) and void borders, and its
    class map. Instance 1 is an L-shape (asymmetric) top-left, instance 2 a block."""
    obj = np.zeros((H, W), np.uint8)
    obj[2:12, 2:6] = 1
    obj[8:12, 6:14] = 1
    obj[18:28, 24:36] = 2
    obj[17, 23:37] = 255  # void band above instance 2
    obj[0, :] = 255
    cls = np.where(obj == 1, 15, np.where(obj == 2, 7, 0)).astype(np.uint8)
    cls[obj == 255] = 255
    return obj, cls


def image(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, H, W, generator=g)


def make_voc(root: Path, splits: dict[str, list[str]], maps=None) -> Path:
    """Write a VOC tree: each name gets the same maps (or ``maps[name]``)."""
    for split, names in splits.items():
        (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(
            "".join(n + "\n" for n in names))
        for k, n in enumerate(names):
            obj, cls = (maps or {}).get(n, voc_maps())
            write_rgb(root / "JPEGImages" / f"{n}.jpg", image(k))
            write_index_png(root / "SegmentationObject" / f"{n}.png", obj)
            write_index_png(root / "SegmentationClass" / f"{n}.png", cls)
    return root


def make_sbd(root: Path, splits: dict[str, list[str]]) -> Path:
    """Write an SBD tree (``root/dataset/…``) with the VOC maps' instances, no void."""
    ds = root / "dataset"
    obj, cls = voc_maps()
    obj = np.where(obj == 255, 0, obj)
    cls = np.where(cls == 255, 0, cls)
    for split, names in splits.items():
        ds.mkdir(parents=True, exist_ok=True)
        (ds / f"{split}.txt").write_text("".join(n + "\n" for n in names))
        for k, n in enumerate(names):
            write_rgb(ds / "img" / f"{n}.jpg", image(k))
            write_gtinst(ds / "inst" / f"{n}.mat", obj, [15, 7])
            write_gtcls(ds / "cls" / f"{n}.mat", cls)
    return root
