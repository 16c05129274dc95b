"""Semantic Boundaries Dataset (SBD, Hariharan et al. 2011): reader and fixture writer.

Layout (``root`` is ``benchmark_RELEASE/dataset``; its parent is accepted too)::

    img/<name>.jpg     RGB image
    inst/<name>.mat    struct GTinst: Segmentation (H, W) uint8 instance map (0 background,
                       k = instance k), Categories (K, 1) class id of instance k (1..20),
                       Boundaries (K, 1) cell of sparse boundary maps
    cls/<name>.mat     struct GTcls: Segmentation (H, W) class map, Boundaries,
                       CategoriesPresent (used only to cross-check, by `check_classes`)
    train.txt, val.txt one name per line (8498 / 2857 in the real release)

SBD has no void label, so ``Sample.ignore`` is all False.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.io
import torch

from basis.data.base import DataError, InstanceDataset, Transform, ids_from_names
from basis.data.imageio import read_rgb
from basis.data.voc import VOC_CLASSES, _image_path, read_split
from basis.types import Sample


def find_sbd_root(root: str | Path) -> Path:
    """``root`` itself or its ``dataset`` child, whichever holds ``inst/``."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: SBD root does not exist")
    if not (root / "inst").is_dir() and (root / "dataset" / "inst").is_dir():
        return root / "dataset"
    return root


def load_mat_struct(path: Path, key: str):
    """The struct ``key`` of a MATLAB file, as a `scipy.io.matlab.mat_struct`."""
    if not path.is_file():
        raise DataError(f"{path}: .mat file not found")
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as err:  # scipy raises ValueError, TypeError, MatReadError …
        raise DataError(f"{path}: cannot read .mat file (corrupt or truncated?): {err}") from err
    if key not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"{path}: no {key} struct in the .mat file (found: {found or 'nothing'})")
    st = mat[key]
    if not hasattr(st, "Segmentation"):
        raise DataError(f"{path}: {key} has no Segmentation field")
    return st


def read_gtinst(path: Path, n_classes: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Instances of one SBD ``inst/*.mat`` file.

    Returns:
        masks (K, H, W) bool and labels (K,) int64, instances in id order; ids listed in
        Categories but without pixels are skipped (no empty masks).
    """
    st = load_mat_struct(path, "GTinst")
    seg = np.asarray(st.Segmentation)
    if seg.ndim != 2:
        raise DataError(f"{path}: GTinst.Segmentation has shape {seg.shape}; expected (H, W)")
    cats = np.atleast_1d(np.asarray(getattr(st, "Categories", []), dtype=np.float64)).ravel()
    if cats.size and (np.any(cats != np.round(cats)) or cats.min() < 1 or cats.max() > n_classes):
        raise DataError(f"{path}: GTinst.Categories {cats.astype(int).tolist()} has class ids "
                        f"outside 1..{n_classes}")
    present = [int(k) for k in np.unique(seg) if k != 0]
    if present and present[-1] > cats.size:
        raise DataError(f"{path}: instance id {present[-1]} in GTinst.Segmentation has no "
                        f"entry in GTinst.Categories ({cats.size} entries)")
    h, w = seg.shape
    masks = (np.stack([seg == k for k in present]) if present
             else np.zeros((0, h, w), dtype=bool))
    labels = np.asarray([int(cats[k - 1]) for k in present], dtype=np.int64)
    return masks, labels


def write_gtinst(path: Path, seg: np.ndarray, categories: Sequence[int]) -> None:
    """Write an SBD-layout ``inst/*.mat`` (used by tests and fixture builders)."""
    k = len(categories)
    bounds = np.empty((k, 1), dtype=object)
    for j in range(k):
        bounds[j, 0] = np.zeros(seg.shape, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"GTinst": {
        "Segmentation": seg.astype(np.uint8),
        "Categories": np.asarray(categories, dtype=np.uint8).reshape(k, 1),
        "Boundaries": bounds}})


def write_gtcls(path: Path, cls_seg: np.ndarray) -> None:
    """Write an SBD-layout ``cls/*.mat``."""
    present = np.asarray([c for c in np.unique(cls_seg) if c != 0], dtype=np.uint8)
    bounds = np.empty((20, 1), dtype=object)
    for j in range(20):
        bounds[j, 0] = np.zeros(cls_seg.shape, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"GTcls": {
        "Segmentation": cls_seg.astype(np.uint8), "Boundaries": bounds,
        "CategoriesPresent": present.reshape(-1, 1)}})


class SBDInstances(InstanceDataset):
    """SBD instance segmentation.

    Args:
        root: ``benchmark_RELEASE/dataset`` (or its parent).
        split: ``train``, ``val`` (files ``<split>.txt``) or ``trainval`` (their union).
        names: explicit image names instead of ``split``.
        n_classes: size of the label set (20).
        check_classes: also read ``cls/<name>.mat`` and require every instance pixel to
            carry the instance's class there (slower; `basis data check` turns it on).
        transform: applied by ``__getitem__``.
    """

    def __init__(self, root: str | Path, split: str = "train", *,
                 names: Sequence[str] | None = None, n_classes: int = 20,
                 check_classes: bool = False, transform: Transform | None = None) -> None:
        self.root = find_sbd_root(root)
        missing = [f for f in ("img", "inst") if not (self.root / f).is_dir()]
        if missing:
            raise DataError(f"{self.root}: missing folder(s) {', '.join(missing)}; an SBD root "
                            "holds img/, inst/, cls/, train.txt and val.txt")
        self.split = split if names is None else None
        if names is None:
            parts = ("train", "val") if split == "trainval" else (split,)
            names = [n for p in parts for n in read_split(self.root / f"{p}.txt")]
            names = list(dict.fromkeys(names))
        self.names = list(names)
        self.ids = ids_from_names(self.names, str(self.root))
        self._name = dict(zip(self.ids, self.names))
        self.n_classes = int(n_classes)
        self.class_names = VOC_CLASSES if n_classes == 20 else tuple(
            f"class{c}" for c in range(1, n_classes + 1))
        self.check_classes = check_classes
        self.transform = transform

    def subset(self, ids: Sequence[int]) -> "SBDInstances":
        try:
            names = [self._name[int(d)] for d in ids]
        except KeyError as err:
            raise KeyError(f"image id {err.args[0]} is not in this dataset") from None
        return SBDInstances(self.root, names=names, n_classes=self.n_classes,
                            check_classes=self.check_classes, transform=self.transform)

    def source(self, i: int) -> str:
        return str(self.root / "inst" / f"{self.names[i]}.mat")

    def load(self, i: int) -> Sample:
        name = self.names[i]
        image = read_rgb(_image_path(self.root / "img", name))
        inst_path = self.root / "inst" / f"{name}.mat"
        masks, labels = read_gtinst(inst_path, self.n_classes)
        h, w = image.shape[-2:]
        if masks.shape[-2:] != (h, w):
            raise DataError(f"{inst_path}: GTinst.Segmentation is {masks.shape[2]}x"
                            f"{masks.shape[1]}, the image is {w}x{h}")
        if self.check_classes:
            cls_path = self.root / "cls" / f"{name}.mat"
            cls = np.asarray(load_mat_struct(cls_path, "GTcls").Segmentation)
            for k, (m, c) in enumerate(zip(masks, labels), start=1):
                if cls.shape != (h, w) or np.any(cls[m] != c):
                    raise DataError(f"{inst_path}: instance {k} (class {int(c)}) does not match "
                                    f"the class map in {cls_path}")
        return Sample(image=image, masks=torch.from_numpy(masks),
                      labels=torch.from_numpy(labels),
                      ignore=torch.zeros((h, w), dtype=torch.bool), image_id=self.ids[i])
