"""Records shared by every part of the method: a ground-truth sample and a prediction.

These are the only types that cross module boundaries inside `basis` (data → train →
infer → metrics → selection), so they stay small and plain.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch


@dataclass
class Sample:
    """One image with its instance annotation.

    Attributes:
        image: (3, H, W) float32 in [0, 1].
        masks: (K, H, W) bool, one per instance, none empty; K may be 0.
        labels: (K,) int64 class ids in 1..C (0 is background, never used here).
        ignore: (H, W) bool, pixels that count neither as hit nor as miss (VOC void).
        image_id: int, unique within a dataset.
    """

    image: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    ignore: torch.Tensor
    image_id: int

    @property
    def weak(self) -> dict[int, int]:
        """The image-level labels plus counts (IL+C): class id → number of instances."""
        return dict(sorted(Counter(int(c) for c in self.labels.tolist()).items()))

    @property
    def n_objects(self) -> int:
        return int(self.masks.shape[0])

    @property
    def mean_object_area(self) -> float:
        """Mean instance area as a fraction of the image (0.0 when there is none)."""
        if self.masks.shape[0] == 0:
            return 0.0
        h, w = self.masks.shape[-2:]
        return float(self.masks.flatten(1).sum(1).float().mean() / (h * w))


@dataclass
class ImagePrediction:
    """The network's output for one image, ready for evaluation and selection.

    Attributes:
        image_id: the `Sample.image_id` it belongs to.
        height, width: size the RLEs are encoded at.
        rles: one pycocotools RLE dict per predicted object (``counts`` as str).
        labels: class id (1..C) per object.
        scores: detection confidence per object, p(class)·σ(stop) or equivalent.
        iou_pred: predicted IoU per object, in IoU space (already un-transformed).
        iou_true: true IoU of each object with its matched ground truth, when known.
    """

    image_id: int
    height: int
    width: int
    rles: list[dict] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    iou_pred: list[float] = field(default_factory=list)
    iou_true: list[float] | None = None

    @property
    def image_score(self) -> float:
        """Eq. 2: the mean predicted IoU over the image's objects (0.0 with none)."""
        return float(sum(self.iou_pred) / len(self.iou_pred)) if self.iou_pred else 0.0

    @property
    def image_iou_true(self) -> float | None:
        """The oracle image score: mean true IoU over the objects, when known."""
        if self.iou_true is None:
            return None
        return float(sum(self.iou_true) / len(self.iou_true)) if self.iou_true else 0.0
