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
        rles: one pycocotools RLE dict per detection (``counts`` as str).
        labels: class id (1..C) per detection.
        scores: confidence per detection, p(class)·σ(stop) or equivalent.
        iou_pred: predicted IoU per detection, in IoU space (already un-transformed).
        iou_true: true IoU of each detection with its matched same-class ground truth,
            when known.
        steps: the decoder step (predicted mask) each detection comes from, or None
            when every detection is its own mask. RSIS-faithful inference
            (`basis.infer`) emits one detection per (mask, class), so several
            detections share a step and an RLE; image-level scores then count each
            mask once, through its `primary` detection.
        extras: per-image uncertainties of the network, from the same forward pass
            (`basis.selection.UNCERTAINTIES` → value; `basis.infer.predict`), or None.
        features: the encoder's last feature map, global-average pooled, (F,) floats
            (`predict(..., with_features=True)`; the core-set baseline), or None.
    """

    image_id: int
    height: int
    width: int
    rles: list[dict] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    iou_pred: list[float] = field(default_factory=list)
    iou_true: list[float] | None = None
    steps: list[int] | None = None
    extras: dict[str, float] | None = None
    features: list[float] | None = None

    def primary(self) -> list[int]:
        """Indices of one detection per predicted mask: the highest-scoring detection
        of each step (the first on equal scores), in order of first appearance; every
        index when ``steps`` is None."""
        if self.steps is None:
            return list(range(len(self.scores)))
        if len(self.steps) != len(self.scores):
            raise ValueError(f"image {self.image_id}: {len(self.steps)} steps for "
                             f"{len(self.scores)} scored detections")
        best: dict[int, int] = {}
        for k, step in enumerate(self.steps):
            if step not in best or self.scores[k] > self.scores[best[step]]:
                best[step] = k
        return list(best.values())

    @property
    def image_score(self) -> float:
        """Eq. 2: the mean predicted IoU over the image's objects (0.0 with none); each
        mask counts once (`primary`)."""
        if not self.iou_pred:
            return 0.0
        vals = [self.iou_pred[k] for k in self.primary()] if self.steps else self.iou_pred
        return float(sum(vals) / len(vals))

    @property
    def image_iou_true(self) -> float | None:
        """The oracle image score: mean true IoU over the objects, when known; each mask
        counts once, by its `primary` detection."""
        if self.iou_true is None:
            return None
        if not self.iou_true:
            return 0.0
        vals = [self.iou_true[k] for k in self.primary()] if self.steps else self.iou_true
        return float(sum(vals) / len(vals))
