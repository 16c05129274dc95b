"""Pseudo-annotated images: the annotation network's masks in place of ground truth.

BASIS trains the segmentation network on the strong images (true masks) and the
additional pool with the masks the annotation network predicted from their IL+C labels.

Empty pseudo-masks
------------------
W-RSIS emits one mask per weak label, and some come out empty (no pixel above the
threshold). Such an object cannot be a training target, yet the weak label says it is
there. Keeping the image without it teaches the segmentation network two wrong things:
to stop after fewer objects than the image holds (the stop target counts the
annotated objects) and that the lost object is background. So the policy ``empty``:

* ``"drop_image"`` (default): an image with any empty pseudo-mask is left out of
  training, and counted.
* ``"drop_object"``: the image is kept with its non-empty masks only (the behaviour
  before this policy existed); each such image is recorded and counted.

Marking the lost object void is not offered: an empty mask has no region to mark,
and voiding everything outside the kept masks would make any over-segmentation free
while still teaching the early stop (the losses have no "object present, mask unknown"
target). Every image's fate is in `PseudoLabelled.reasons` (those not kept as
predicted) and `PseudoLabelled.counts`, for the caller to log.
"""
from __future__ import annotations

from typing import Any, Sequence

import pycocotools.mask as mask_utils
import torch
from torch.utils.data import Dataset

from basis.metrics.ap import rle_areas
from basis.types import ImagePrediction, Sample

EMPTY_POLICIES = ("drop_image", "drop_object")


def _coco_rles(rles: Sequence[dict]) -> list[dict]:
    return [{"size": r["size"], "counts": r["counts"].encode()
             if isinstance(r["counts"], str) else r["counts"]} for r in rles]


def decode(pred: ImagePrediction, min_pixels: int = 1,
           indices: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A prediction's RLEs → ``(masks (K, H, W) bool, labels (K,) long)``.

    Args:
        pred: the prediction.
        min_pixels: objects with fewer pixels are dropped (training wants no empty
            masks); 0 keeps every one.
        indices: which detections to decode, e.g. ``pred.primary()`` for one per mask
            of an RSIS-faithful prediction; None for all, in order.
    """
    idx = list(range(len(pred.rles))) if indices is None else [int(k) for k in indices]
    if not idx:
        return (torch.zeros(0, pred.height, pred.width, dtype=torch.bool),
                torch.zeros(0, dtype=torch.long))
    arr = mask_utils.decode(_coco_rles([pred.rles[k] for k in idx]))    # (H, W, K) uint8
    masks = torch.from_numpy(arr).permute(2, 0, 1).bool()
    labels = torch.tensor([pred.labels[k] for k in idx], dtype=torch.long)
    keep = masks.flatten(1).sum(1) >= min_pixels
    return masks[keep], labels[keep]


class PseudoLabelled(Dataset):
    """``images`` with the objects of ``predictions`` as their annotation.

    The objects of an image are its prediction's `ImagePrediction.primary` detections
    (one per predicted mask). An image is left out when it has no prediction, when it
    has no object, or by the ``empty`` policy (module docstring).

    Args:
        images: a dataset of `Sample`s (only the image is used; its ground truth never is).
        predictions: one `ImagePrediction` per image, matched by ``image_id``.
        empty: ``"drop_image"`` (default) or ``"drop_object"``.
        min_pixels: a pseudo-mask with fewer pixels counts as empty.

    Attributes:
        ids: the image ids kept, in the order of ``images.ids``.
        reasons: image id → why it was left out or kept with fewer objects than
            predicted; images kept whole are absent.
        counts: ``images`` (given), ``kept``, ``kept_with_lost_object``, ``left_out``,
            ``empty_masks`` (empty pseudo-masks over all given images).
    """

    def __init__(self, images: Any, predictions: Sequence[ImagePrediction],
                 empty: str = "drop_image", min_pixels: int = 1) -> None:
        if empty not in EMPTY_POLICIES:
            raise ValueError(f"empty={empty!r} not in {EMPTY_POLICIES}")
        self.images = images
        self.empty = empty
        self.by_id = {int(p.image_id): p for p in predictions}
        self.reasons: dict[int, str] = {}
        self._objects: dict[int, list[int]] = {}
        n_empty = n_partial = 0
        for raw in images.ids:
            image_id = int(raw)
            pred = self.by_id.get(image_id)
            if pred is None:
                self.reasons[image_id] = "left out: no prediction"
                continue
            objects = pred.primary()
            if not objects:
                self.reasons[image_id] = "left out: no object predicted"
                continue
            areas = rle_areas(_coco_rles([pred.rles[k] for k in objects]))
            kept = [k for k, a in zip(objects, areas) if a >= min_pixels]
            lost = [k for k, a in zip(objects, areas) if a < min_pixels]
            n_empty += len(lost)
            if lost:
                what = (f"{len(lost)} of {len(objects)} pseudo-masks empty "
                        f"(classes {sorted(pred.labels[k] for k in lost)})")
                if not kept or empty == "drop_image":
                    self.reasons[image_id] = f"left out: {what}"
                    continue
                self.reasons[image_id] = f"kept with {len(kept)} of {len(objects)} objects: {what}"
                n_partial += 1
            self._objects[image_id] = kept
        self.ids = [int(i) for i in images.ids if int(i) in self._objects]
        self._index = {int(i): k for k, i in enumerate(images.ids)}
        self.counts = {"images": len(images.ids), "kept": len(self.ids),
                       "kept_with_lost_object": n_partial,
                       "left_out": len(images.ids) - len(self.ids), "empty_masks": n_empty}

    def summary(self) -> str:
        """One line for a log: the counts and the policy."""
        c = self.counts
        return (f"pseudo-labelled: {c['kept']} of {c['images']} images kept "
                f"({c['kept_with_lost_object']} with a lost object), {c['left_out']} left "
                f"out; {c['empty_masks']} empty pseudo-masks; empty={self.empty!r}")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> Sample:
        image_id = self.ids[i]
        sample = self.images[self._index[image_id]]
        masks, labels = decode(self.by_id[image_id], min_pixels=0,
                               indices=self._objects[image_id])
        return Sample(image=sample.image, masks=masks, labels=labels,
                      ignore=torch.zeros_like(sample.ignore), image_id=image_id)


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
