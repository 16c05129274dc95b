"""Pseudo-annotated images: the annotation network's masks in place of ground truth.

BASIS trains the segmentation network on the strong images (true masks) and the
additional pool with the masks the annotation network predicted from their IL+C labels.
"""
from __future__ import annotations

from typing import Any, Sequence

import pycocotools.mask as mask_utils
import torch
from torch.utils.data import Dataset

from basis.types import ImagePrediction, Sample


def decode(pred: ImagePrediction, min_pixels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A prediction's RLEs → ``(masks (K, H, W) bool, labels (K,) long)``.

    Objects with fewer than ``min_pixels`` pixels are dropped (training wants no
    empty masks).
    """
    if not pred.rles:
        return (torch.zeros(0, pred.height, pred.width, dtype=torch.bool),
                torch.zeros(0, dtype=torch.long))
    arr = mask_utils.decode([{"size": r["size"], "counts": r["counts"].encode()
                              if isinstance(r["counts"], str) else r["counts"]}
                             for r in pred.rles])                    # (H, W, K) uint8
    masks = torch.from_numpy(arr).permute(2, 0, 1).bool()
    labels = torch.tensor(pred.labels, dtype=torch.long)
    keep = masks.flatten(1).sum(1) >= min_pixels
    return masks[keep], labels[keep]


class PseudoLabelled(Dataset):
    """``images`` with the objects of ``predictions`` as their annotation.

    Images whose prediction holds no non-empty mask are left out (nothing to learn).

    Args:
        images: a dataset of `Sample`s (only the image is used; its ground truth never is).
        predictions: one `ImagePrediction` per image, matched by ``image_id``.
    """

    def __init__(self, images: Any, predictions: Sequence[ImagePrediction]) -> None:
        self.images = images
        self.by_id = {p.image_id: p for p in predictions if _has_object(p)}
        self.ids = [int(i) for i in images.ids if int(i) in self.by_id]
        self._index = {int(i): k for k, i in enumerate(images.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> Sample:
        image_id = self.ids[i]
        sample = self.images[self._index[image_id]]
        masks, labels = decode(self.by_id[image_id])
        return Sample(image=sample.image, masks=masks, labels=labels,
                      ignore=torch.zeros_like(sample.ignore), image_id=image_id)


def _has_object(pred: ImagePrediction) -> bool:
    if not pred.rles:
        return False
    rles = [{"size": r["size"], "counts": r["counts"].encode()
             if isinstance(r["counts"], str) else r["counts"]} for r in pred.rles]
    return bool(mask_utils.area(rles).max() > 0)


class Concat(Dataset):
    """Several `Sample` datasets one after the other (strong ∪ pseudo)."""

    def __init__(self, parts: Sequence[Any]) -> None:
        self.parts = list(parts)
        self.ids = [i for p in self.parts for i in p.ids]

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __getitem__(self, i: int) -> Sample:
        for p in self.parts:
            if i < len(p):
                return p[i]
            i -= len(p)
        raise IndexError(i)
