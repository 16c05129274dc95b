"""Mask IoU, Hungarian true IoU, image-score MAE and calibration."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from basis.metrics.iou import calibration, image_score_mae, mask_iou_matrix, match_true_iou


def box(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_iou_matrix_hand_values():
    a = box(8, 8, 0, 4, 0, 4)  # 16 px
    b = box(8, 8, 0, 4, 2, 6)  # 16 px, 8 shared → 8 / 24
    c = box(8, 8, 6, 8, 6, 8)
    iou = mask_iou_matrix(np.stack([a, c]), np.stack([a, b]))
    assert iou.shape == (2, 2)
    np.testing.assert_allclose(iou, [[1.0, 8 / 24], [0.0, 0.0]])


def test_iou_matrix_ignore_removed_from_both_and_torch_input():
    a = box(8, 8, 0, 4, 0, 4)
    b = box(8, 8, 0, 4, 2, 6)
    ignore = box(8, 8, 0, 4, 4, 6)  # b's 8 private pixels: b becomes a's right half
    iou = mask_iou_matrix(torch.from_numpy(a[None]), torch.from_numpy(b[None]),
                          torch.from_numpy(ignore))
    assert iou[0, 0] == pytest.approx(8 / 16)


def test_iou_matrix_empty_and_shape_errors():
    assert mask_iou_matrix(np.zeros((0, 4, 4), bool), np.ones((3, 4, 4), bool)).shape == (0, 3)
    assert mask_iou_matrix(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4), bool))[0, 0] == 0.0
    with pytest.raises(ValueError, match="gt masks"):
        mask_iou_matrix(np.zeros((1, 4, 4), bool), np.zeros((1, 5, 4), bool))
    with pytest.raises(ValueError, match="ignore"):
        mask_iou_matrix(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4), bool),
                        np.zeros((3, 3), bool))


def test_match_true_iou_hungarian_beats_greedy():
    # 1×8 images. IoU matrix [[1/3, 1/2], [0, 3/7]]: greedy on the best pair takes
    # p0→g1 (0.5) and leaves p1 with nothing; the optimum is p0→g0, p1→g1.
    g0, g1 = box(1, 8, 0, 1, 0, 1), box(1, 8, 0, 1, 1, 4)
    p0, p1 = box(1, 8, 0, 1, 0, 3), box(1, 8, 0, 1, 1, 8)
    out = match_true_iou(np.stack([p0, p1]), torch.tensor([1, 1]), np.stack([g0, g1]),
                         torch.tensor([1, 1]), np.zeros((1, 8), bool))
    assert out == pytest.approx([1 / 3, 3 / 7])


def test_match_true_iou_class_restricted_and_unmatched_zero():
    g = box(6, 6, 0, 3, 0, 3)
    # p0 is a perfect mask of the wrong class; p1 the right class, half overlap;
    # p2 a second prediction of class 1 with no object left.
    p0 = g
    p1 = box(6, 6, 0, 3, 0, 6)
    p2 = box(6, 6, 3, 6, 3, 6)
    out = match_true_iou(torch.from_numpy(np.stack([p0, p1, p2])), torch.tensor([2, 1, 1]),
                         torch.from_numpy(g[None]), torch.tensor([1]),
                         torch.zeros(6, 6, dtype=torch.bool))
    assert out == pytest.approx([0.0, 0.5, 0.0])
    assert match_true_iou(np.zeros((0, 6, 6), bool), [], g[None], [1], None) == []
    assert match_true_iou(g[None], [1], np.zeros((0, 6, 6), bool), [], None) == [0.0]


def test_match_true_iou_length_mismatch():
    with pytest.raises(ValueError, match="labels"):
        match_true_iou(np.zeros((2, 4, 4), bool), [1], np.zeros((1, 4, 4), bool), [1], None)


def test_image_score_mae():
    assert image_score_mae([0.2, 0.5, 1.0], [0.3, 0.5, 0.6]) == pytest.approx((0.1 + 0 + 0.4) / 3)
    with pytest.raises(ValueError, match="pred has 2"):
        image_score_mae([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="empty"):
        image_score_mae([], [])


def test_calibration_bins():
    rows = calibration([0.05, 0.15, 0.12, 1.0, 1.3], [0.0, 0.2, 0.4, 0.9, 0.7], bins=4)
    assert [r["count"] for r in rows] == [3, 0, 0, 2]
    assert rows[0]["lo"] == 0.0 and rows[0]["hi"] == 0.25 and rows[3]["hi"] == 1.0
    assert rows[0]["mean_pred"] == pytest.approx((0.05 + 0.15 + 0.12) / 3)
    assert rows[0]["mean_true"] == pytest.approx(0.2)
    assert rows[3]["mean_true"] == pytest.approx(0.8)
    assert math.isnan(rows[1]["mean_pred"]) and math.isnan(rows[1]["mean_true"])
    with pytest.raises(ValueError, match="bins"):
        calibration([0.1], [0.1], bins=0)
