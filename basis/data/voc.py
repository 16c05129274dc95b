"""PASCAL VOC 2012 instance segmentation: reader and writer of the VOC folder layout.

Layout (``root`` is ``VOCdevkit/VOC2012``; ``VOCdevkit`` itself is accepted too)::

    JPEGImages/<name>.jpg                 RGB image
    SegmentationObject/<name>.png         palette PNG: 0 background, 1..K instances, 255 void
    SegmentationClass/<name>.png          palette PNG: 0 background, 1..20 classes, 255 void
    ImageSets/Segmentation/<split>.txt    one name per line (train: 1464, val: 1449 in the
                                          real release; the reader counts, never assumes)

An instance's class is read from the class PNG under its pixels. Void pixels (255 in
either PNG) become ``Sample.ignore`` and belong to no instance, as in VOC itself. Object
and class PNGs must agree: an instance over background or over several classes, or class
pixels outside every instance, is an error naming the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from basis.data.base import DataError, InstanceDataset, Transform, ids_from_names
from basis.data.imageio import VOID, read_index_png, read_rgb, write_index_png, write_rgb
from basis.types import Sample

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
               "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor")
FOLDERS = ("JPEGImages", "SegmentationObject", "SegmentationClass")
SPLIT_DIR = Path("ImageSets") / "Segmentation"


def find_voc_root(root: str | Path) -> Path:
    """``root`` itself, or its ``VOC2012``/``VOCdevkit/VOC2012`` child holding the layout."""
    root = Path(root)
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "SegmentationObject").is_dir() or (cand / "JPEGImages").is_dir():
            return cand
    if not root.exists():
        raise DataError(f"{root}: VOC root does not exist")
    return root


def read_split(path: Path) -> list[str]:
    """Names listed in a split file (blank lines and surrounding spaces dropped)."""
    if not path.is_file():
        raise DataError(f"{path}: split file not found")
    names = [ln.split()[0] for ln in path.read_text().splitlines() if ln.strip()]
    return list(dict.fromkeys(names))


def _image_path(folder: Path, name: str) -> Path:
    for ext in (".jpg", ".jpeg", ".png", ".JPG"):
        p = folder / f"{name}{ext}"
        if p.is_file():
            return p
    return folder / f"{name}.jpg"


class VOCInstances(InstanceDataset):
    """VOC 2012 instance segmentation.

    Args:
        root: ``VOCdevkit/VOC2012`` (or ``VOCdevkit``).
        split: name of a file in ``ImageSets/Segmentation/`` without ``.txt``.
        names: explicit image names instead of ``split``.
        n_classes: size of the label set (20); class ids outside 1..n_classes are errors.
        class_names: names of classes 1..n_classes.
        transform: applied by ``__getitem__``.
    """

    def __init__(self, root: str | Path, split: str = "train", *,
                 names: Sequence[str] | None = None, n_classes: int = 20,
                 class_names: Sequence[str] | None = None,
                 transform: Transform | None = None) -> None:
        self.root = find_voc_root(root)
        missing = [f for f in FOLDERS if not (self.root / f).is_dir()]
        if missing:
            raise DataError(f"{self.root}: missing folder(s) {', '.join(missing)}; a VOC root "
                            f"holds {', '.join(FOLDERS)} and {SPLIT_DIR}/")
        self.split = split if names is None else None
        self.names = (read_split(self.root / SPLIT_DIR / f"{split}.txt") if names is None
                      else list(names))
        self.ids = ids_from_names(self.names, str(self.root))
        self._name = dict(zip(self.ids, self.names))
        self.n_classes = int(n_classes)
        self.class_names = tuple(class_names) if class_names is not None else (
            VOC_CLASSES if n_classes == 20 else tuple(f"class{c}" for c in range(1, n_classes + 1)))
        self.transform = transform

    def splits(self) -> list[str]:
        """Split files present in ``ImageSets/Segmentation/``."""
        return sorted(p.stem for p in (self.root / SPLIT_DIR).glob("*.txt"))

    def subset(self, ids: Sequence[int]) -> "VOCInstances":
        try:
            names = [self._name[int(d)] for d in ids]
        except KeyError as err:
            raise KeyError(f"image id {err.args[0]} is not in this dataset") from None
        return VOCInstances(self.root, names=names, n_classes=self.n_classes,
                            class_names=self.class_names, transform=self.transform)

    def source(self, i: int) -> str:
        return str(self.root / "SegmentationObject" / f"{self.names[i]}.png")

    def load(self, i: int) -> Sample:
        name = self.names[i]
        image = read_rgb(_image_path(self.root / "JPEGImages", name))
        obj_path = self.root / "SegmentationObject" / f"{name}.png"
        cls_path = self.root / "SegmentationClass" / f"{name}.png"
        obj, cls = read_index_png(obj_path), read_index_png(cls_path)
        h, w = image.shape[-2:]
        for p, a in ((obj_path, obj), (cls_path, cls)):
            if a.shape != (h, w):
                raise DataError(f"{p}: size {a.shape[1]}x{a.shape[0]} differs from the "
                                f"image's {w}x{h}")
        masks, labels, ignore = decode_voc(obj, cls, self.n_classes, obj_path, cls_path)
        return Sample(image=image, masks=torch.from_numpy(masks),
                      labels=torch.from_numpy(labels), ignore=torch.from_numpy(ignore),
                      image_id=self.ids[i])


def decode_voc(obj: np.ndarray, cls: np.ndarray, n_classes: int, obj_path: Path,
               cls_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instances from a VOC object/class index-map pair.

    Returns:
        masks (K, H, W) bool, labels (K,) int64, ignore (H, W) bool.
    """
    bad = np.setdiff1d(np.unique(cls), np.r_[np.arange(n_classes + 1), VOID])
    if bad.size:
        raise DataError(f"{cls_path}: class ids {bad.tolist()} outside the label set "
                        f"0..{n_classes} (255 = void)")
    ignore = (obj == VOID) | (cls == VOID)
    inst = np.where(ignore, 0, obj)
    stray = (inst == 0) & (cls != 0) & ~ignore
    if stray.any():
        c = sorted(set(np.unique(cls[stray]).tolist()))
        raise DataError(f"{obj_path}: {int(stray.sum())} pixels of class(es) {c} in "
                        f"{cls_path.name} belong to no instance; the object and class PNGs "
                        "do not match")
    masks, labels = [], []
    for k in np.unique(inst):
        if k == 0:
            continue
        m = inst == k
        cs = np.unique(cls[m])
        if cs.size != 1 or cs[0] == 0:
            raise DataError(f"{obj_path}: instance {int(k)} covers class id(s) {cs.tolist()} in "
                            f"{cls_path.name}; expected exactly one class in 1..{n_classes}")
        masks.append(m)
        labels.append(int(cs[0]))
    h, w = obj.shape
    masks_a = np.stack(masks) if masks else np.zeros((0, h, w), dtype=bool)
    return masks_a, np.asarray(labels, dtype=np.int64), ignore


def encode_voc(s: Sample) -> tuple[np.ndarray, np.ndarray]:
    """The VOC object and class index maps of a sample.

    Instances are numbered 1..K in order; void (255) is written on ignored pixels that
    no instance covers, so masks and labels read back exactly and the read-back ignore
    region is ``ignore & ~any(masks)`` (VOC never has a void pixel inside an object).
    Where instances overlap, the later one wins.
    """
    h, w = s.masks.shape[-2:]
    if s.masks.shape[0] > 254:
        raise ValueError(f"image {s.image_id}: {s.masks.shape[0]} instances; VOC PNGs hold 254")
    obj = np.zeros((h, w), dtype=np.uint8)
    cls = np.zeros((h, w), dtype=np.uint8)
    for k, (m, c) in enumerate(zip(s.masks.numpy(), s.labels.tolist()), start=1):
        obj[m] = k
        cls[m] = int(c)
    void = s.ignore.numpy() & (obj == 0)
    obj[void] = VOID
    cls[void] = VOID
    return obj, cls


def write_voc(root: str | Path, splits: Mapping[str, Iterable[Sample]],
              name_width: int = 7) -> dict[str, int]:
    """Write samples in the VOC 2012 layout under ``root``.

    Args:
        root: output folder (becomes the VOC root: ``root/JPEGImages`` …).
        splits: split name → samples; each split gets ``ImageSets/Segmentation/<split>.txt``.
        name_width: file names are the zero-padded image id, so that
            `image_id_from_name` gives the id back.

    Returns:
        split name → number of images written.
    """
    root = Path(root)
    for f in FOLDERS:
        (root / f).mkdir(parents=True, exist_ok=True)
    (root / SPLIT_DIR).mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, samples in splits.items():
        names = []
        for s in samples:
            name = f"{int(s.image_id):0{name_width}d}"
            obj, cls = encode_voc(s)
            write_rgb(root / "JPEGImages" / f"{name}.jpg", s.image)
            write_index_png(root / "SegmentationObject" / f"{name}.png", obj)
            write_index_png(root / "SegmentationClass" / f"{name}.png", cls)
            names.append(name)
        (root / SPLIT_DIR / f"{split}.txt").write_text("".join(n + "\n" for n in names))
        counts[split] = len(names)
    return counts
