"""Mask IoU, the true IoU of each predicted object, and how well IoU is predicted.

The true IoU of a predicted object is the quantity the IoU branch of IoU-W-RSIS
regresses (paper Sec. 5); averaged over an image it is the oracle *IoU Score* (Eq. 2)
used by the oracle selection of Sec. 6.2.1. VOC void pixels are excluded from both
masks before any IoU is taken, as in the VOC evaluation.
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

ArrayLike = Union[torch.Tensor, np.ndarray]


def _as_bool(x: ArrayLike, name: str, ndim: int) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {x.shape}")
    return x.astype(bool, copy=False)


def _as_long(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x).reshape(-1)
    return x.astype(np.int64, copy=False)


def mask_iou_matrix(pred: ArrayLike, gt: ArrayLike, ignore: ArrayLike | None = None) -> np.ndarray:
    """IoU (Eq. 1) of every predicted mask with every ground-truth mask.

    Pixels marked in ``ignore`` are removed from both masks first, so they count
    neither in the intersection nor in the union. A pair whose union is empty has
    IoU 0.0.

    Args:
        pred: (P, H, W) bool tensor or array, predicted masks.
        gt: (K, H, W) bool tensor or array, ground-truth masks.
        ignore: (H, W) bool, void pixels, or None for none.

    Returns:
        (P, K) float64 array of IoUs in [0, 1].

    Raises:
        ValueError: if the shapes do not agree.
    """
    p = _as_bool(pred, "pred", 3)
    g = _as_bool(gt, "gt", 3)
    if p.shape[1:] != g.shape[1:]:
        raise ValueError(f"pred masks are {p.shape[1:]} but gt masks are {g.shape[1:]}")
    keep = np.ones(p.shape[1:], dtype=bool)
    if ignore is not None:
        ig = _as_bool(ignore, "ignore", 2)
        if ig.shape != p.shape[1:]:
            raise ValueError(f"ignore is {ig.shape} but masks are {p.shape[1:]}")
        keep = ~ig
    n_p, n_g = p.shape[0], g.shape[0]
    if n_p == 0 or n_g == 0:
        return np.zeros((n_p, n_g), dtype=np.float64)
    # float64 counts are exact up to 2**53 pixels; a matmul is far faster than a
    # Python loop over pairs.
    pf = (p & keep).reshape(n_p, -1).astype(np.float64)
    gf = (g & keep).reshape(n_g, -1).astype(np.float64)
    inter = pf @ gf.T
    union = pf.sum(1)[:, None] + gf.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_true_iou(
    pred_masks: ArrayLike,
    pred_labels: ArrayLike,
    gt_masks: ArrayLike,
    gt_labels: ArrayLike,
    ignore: ArrayLike | None,
) -> list[float]:
    """The true IoU of each predicted object with the ground truth it is matched to.

    Predictions and ground truth are matched one-to-one by the Hungarian algorithm,
    maximising the summed IoU, and only pairs of the same class may be matched. A
    prediction left without a same-class partner (more predictions than objects of
    that class, or a class absent from the image) gets 0.0.

    Args:
        pred_masks: (P, H, W) bool, predicted masks.
        pred_labels: (P,) long, predicted class ids.
        gt_masks: (K, H, W) bool, ground-truth masks.
        gt_labels: (K,) long, ground-truth class ids.
        ignore: (H, W) bool void pixels excluded from every IoU, or None.

    Returns:
        P floats in [0, 1], in the order of the predictions.
    """
    pl = _as_long(pred_labels, "pred_labels")
    gl = _as_long(gt_labels, "gt_labels")
    iou = mask_iou_matrix(pred_masks, gt_masks, ignore)
    if iou.shape != (pl.size, gl.size):
        raise ValueError(
            f"{iou.shape[0]} predicted masks with {pl.size} labels, "
            f"{iou.shape[1]} ground-truth masks with {gl.size} labels"
        )
    out = [0.0] * pl.size
    if pl.size == 0 or gl.size == 0:
        return out
    same = pl[:, None] == gl[None, :]
    gain = np.where(same, iou, 0.0)
    # A cross-class pair gains nothing, so the assignment never prefers it; when the
    # solver still pairs one (every row must be assigned) it is read as unmatched.
    rows, cols = linear_sum_assignment(gain, maximize=True)
    for r, c in zip(rows, cols):
        if same[r, c]:
            out[r] = float(iou[r, c])
    return out


def image_score_mae(pred: Sequence[float], true: Sequence[float]) -> float:
    """Mean absolute error between predicted and true image IoU scores (Eq. 2).

    This is the metric of the paper's Table 2, which prints it ×100 (e.g. 16.6
    there is 0.166 here).

    Args:
        pred: (N,) predicted image scores, one per image.
        true: (N,) true (oracle) image scores, same order.

    Returns:
        The MAE in [0, 1] for scores in [0, 1].

    Raises:
        ValueError: on different lengths, no images, or non-finite values.
    """
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    t = np.asarray(true, dtype=np.float64).reshape(-1)
    if p.size != t.size:
        raise ValueError(f"pred has {p.size} scores but true has {t.size}")
    if p.size == 0:
        raise ValueError("pred and true are empty: the MAE of no images is undefined")
    if not (np.isfinite(p).all() and np.isfinite(t).all()):
        raise ValueError("pred and true must be finite")
    return float(np.abs(p - t).mean())


def calibration(pred: Sequence[float], true: Sequence[float], bins: int = 10) -> list[dict]:
    """Reliability table: true image IoU against predicted image IoU, binned.

    The predicted scores are put into ``bins`` equal-width bins over [0, 1] (values
    outside are clipped into the end bins; the last bin includes 1.0). Every bin is
    reported, empty ones with count 0 and NaN means, so that tables line up.

    Args:
        pred: (N,) predicted image scores.
        true: (N,) true image scores, same order.
        bins: number of bins, ≥ 1.

    Returns:
        ``bins`` dicts with keys ``lo``, ``hi`` (bin edges), ``count``,
        ``mean_pred`` and ``mean_true``.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    t = np.asarray(true, dtype=np.float64).reshape(-1)
    if p.size != t.size:
        raise ValueError(f"pred has {p.size} scores but true has {t.size}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.floor(np.clip(p, 0.0, 1.0) * bins).astype(np.int64), 0, bins - 1)
    rows = []
    for b in range(bins):
        sel = idx == b
        n = int(sel.sum())
        rows.append({
            "lo": float(edges[b]),
            "hi": float(edges[b + 1]),
            "count": n,
            "mean_pred": float(p[sel].mean()) if n else math.nan,
            "mean_true": float(t[sel].mean()) if n else math.nan,
        })
    return rows
