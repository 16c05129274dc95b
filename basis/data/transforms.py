"""Joint image/mask transforms on `Sample`s, built on ``torchvision.transforms.v2``.

The image goes in as a ``tv_tensors.Image`` and the instance masks and the ignore region
as ``tv_tensors.Mask``, so one call applies the same geometry to all three (masks are
resampled with nearest neighbour). Instances a crop leaves empty (or smaller than
``min_pixels``) are dropped with their labels, so ``Sample.masks`` never holds an empty
mask. Labels and the image id pass through.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from basis.types import Sample


class DropEmpty:
    """Remove instances with fewer than ``min_pixels`` pixels (e.g. cut away by a crop)."""

    def __init__(self, min_pixels: int = 1) -> None:
        self.min_pixels = int(min_pixels)

    def __call__(self, s: Sample) -> Sample:
        keep = s.masks.flatten(1).sum(1) >= self.min_pixels
        if bool(keep.all()):
            return s
        return Sample(image=s.image, masks=s.masks[keep], labels=s.labels[keep],
                      ignore=s.ignore, image_id=s.image_id)


class SampleTransform:
    """Apply torchvision v2 transforms to a `Sample`'s image, masks and ignore together.

    Args:
        transforms: v2 transforms, composed in order (geometry and photometry; the
            photometric ones touch the image only).
        min_pixels: instances left with fewer pixels are dropped (see `DropEmpty`).
    """

    def __init__(self, transforms: Sequence[Callable], min_pixels: int = 1) -> None:
        self.transform = v2.Compose(list(transforms))
        self.drop = DropEmpty(min_pixels)

    def __call__(self, s: Sample) -> Sample:
        image, masks, ignore = self.transform(
            tv_tensors.Image(s.image), tv_tensors.Mask(s.masks.bool()),
            tv_tensors.Mask(s.ignore.bool()[None]))
        out = Sample(image=image.as_subclass(torch.Tensor).contiguous(),
                     masks=masks.as_subclass(torch.Tensor).bool().contiguous(),
                     labels=s.labels, ignore=ignore.as_subclass(torch.Tensor)[0].bool(),
                     image_id=s.image_id)
        return self.drop(out)

    def __repr__(self) -> str:
        return f"SampleTransform({self.transform!r}, min_pixels={self.drop.min_pixels})"


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def resize(size: int | tuple[int, int]) -> SampleTransform:
    """Resize to the training size (square ``size`` or ``(H, W)``); the paper uses 256×256."""
    return SampleTransform([v2.Resize(_size(size), antialias=True)])


def hflip(p: float = 0.5) -> SampleTransform:
    """Horizontal flip with probability ``p``."""
    return SampleTransform([v2.RandomHorizontalFlip(p)])


def train_transform(size: int | tuple[int, int], *, flip: bool = True,
                    scale: tuple[float, float] = (0.5, 1.0),
                    ratio: tuple[float, float] = (3 / 4, 4 / 3),
                    min_pixels: int = 1) -> SampleTransform:
    """Training augmentation: scale/crop jitter to ``size``, then a random horizontal flip.

    Args:
        size: output size, square side or ``(H, W)``.
        flip: add ``RandomHorizontalFlip(0.5)``.
        scale: range of the crop's area as a fraction of the image (``(1, 1)`` with
            ``ratio=(1, 1)`` on a square image is a plain resize).
        ratio: aspect-ratio range of the crop.
        min_pixels: instances left with fewer pixels after the crop are dropped.
    """
    ts: list[Callable] = [v2.RandomResizedCrop(_size(size), scale=scale, ratio=ratio,
                                               antialias=True)]
    if flip:
        ts.append(v2.RandomHorizontalFlip(0.5))
    return SampleTransform(ts, min_pixels=min_pixels)


def eval_transform(size: int | tuple[int, int]) -> SampleTransform:
    """Evaluation: resize only."""
    return resize(size)
