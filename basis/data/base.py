"""The interface every dataset follows, its per-image statistics, and the data error type.

A dataset is an ordered list of integer image ids; item ``i`` is the `Sample` of image
``ids[i]``. Every reader (synthetic, VOC 2012, SBD, COCO JSON) subclasses
`InstanceDataset`, so training, inference, selection and ``basis data check`` see one
shape of data whatever its source.

Empty images (no instance after void removal) are kept, with ``K == 0`` masks: they are
legitimate pool members (their image score is 0.0) and ``basis data check`` counts them.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Callable, Sequence

from torch.utils.data import Dataset

from basis.types import Sample

Transform = Callable[[Sample], Sample]


class DataError(ValueError):
    """A dataset file is missing, unreadable or inconsistent; the message names the file."""


@dataclass(frozen=True)
class ImageStats:
    """Per-image statistics (the paper's Fig. 5 axes plus the weak label).

    Attributes:
        image_id: the `Sample.image_id`.
        n_objects: number of instances K.
        mean_object_area: mean instance area as a fraction of the image (0.0 with none).
        n_classes: number of distinct classes present.
        weak: image-level labels plus counts (IL+C): class id → number of instances.
        object_areas: each instance's area as a fraction of the image.
        height, width: image size in pixels.
    """

    image_id: int
    n_objects: int
    mean_object_area: float
    n_classes: int
    weak: dict[int, int]
    object_areas: tuple[float, ...]
    height: int
    width: int

    @classmethod
    def of(cls, s: Sample) -> "ImageStats":
        h, w = (int(x) for x in s.masks.shape[-2:])
        areas = tuple(float(a) / (h * w) for a in s.masks.flatten(1).sum(1).tolist())
        weak = s.weak
        return cls(image_id=int(s.image_id), n_objects=s.n_objects,
                   mean_object_area=s.mean_object_area, n_classes=len(weak), weak=weak,
                   object_areas=areas, height=h, width=w)


class InstanceDataset(Dataset):
    """Base class of all instance-segmentation datasets.

    Subclasses set ``self.ids`` (list of int, unique) and implement `load` and `subset`.
    ``transform`` (a `Sample` → `Sample` callable, e.g. `basis.data.transforms.SampleTransform`)
    is applied by ``__getitem__`` only; `load` and `stats` always see the stored data.
    """

    ids: list[int]
    transform: Transform | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> Sample:
        s = self.load(i)
        t = self.transform
        return t(s) if t is not None else s

    def load(self, i: int) -> Sample:
        """Item ``i`` as stored, without the transform."""
        raise NotImplementedError

    def subset(self, ids: Sequence[int]) -> "InstanceDataset":
        """The same data restricted to the given image ids, in that order."""
        raise NotImplementedError

    def stats(self, i: int) -> ImageStats:
        """Statistics of item ``i`` as stored (before any transform)."""
        return ImageStats.of(self.load(i))

    def index_of(self, image_id: int) -> int:
        """Position of ``image_id`` in ``ids``."""
        if not hasattr(self, "_index"):
            self._index = {d: k for k, d in enumerate(self.ids)}
        try:
            return self._index[int(image_id)]
        except KeyError:
            raise KeyError(f"image id {image_id} is not in this dataset") from None

    def source(self, i: int) -> str:
        """Where item ``i`` comes from (a file name), for error messages."""
        return f"image {self.ids[i]}"


_NUMERIC = re.compile(r"[0-9_]+")


def image_id_from_name(name: str) -> int:
    """The integer image id of a file stem.

    VOC/SBD stems such as ``2007_000032`` become ``2007000032``, so the same image has
    the same id in both datasets; any other stem gets a stable 31-bit CRC32 hash.
    """
    if _NUMERIC.fullmatch(name):
        return int(name.replace("_", ""))
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def ids_from_names(names: Sequence[str], where: str) -> list[int]:
    """Image ids of ``names``; raises `DataError` naming ``where`` on a collision."""
    ids = [image_id_from_name(n) for n in names]
    if len(set(ids)) != len(ids):
        seen: dict[int, str] = {}
        for n, d in zip(names, ids):
            if d in seen and seen[d] != n:
                raise DataError(f"{where}: image names {seen[d]!r} and {n!r} map to the "
                                f"same image id {d}; rename one")
            seen[d] = n
        raise DataError(f"{where}: an image name is listed twice")
    return ids
