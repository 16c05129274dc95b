from __future__ import annotations

import pycocotools.mask as mask_utils
import torch

from basis.data import SyntheticConfig, SyntheticShapes
from basis.infer import encode_rles, predict, weak_class_sequence
from basis.models import RSIS, ModelConfig

DATA = SyntheticShapes(SyntheticConfig(image_size=32), seed=1, ids=range(3))


def test_weak_class_sequence_orders_by_class_id():
    seq = weak_class_sequence([torch.tensor([7, 2, 7]), torch.tensor([4])])
    assert seq.tolist() == [[2, 7, 7], [4, 0, 0]]


def test_encode_rles_roundtrip():
    masks = torch.zeros(2, 5, 7, dtype=torch.bool)
    masks[0, 1:3, 2:6] = True
    rles = encode_rles(masks)
    assert all(isinstance(r["counts"], str) and r["size"] == [5, 7] for r in rles)
    dec = mask_utils.decode([{"size": r["size"], "counts": r["counts"].encode()} for r in rles])
    assert torch.equal(torch.from_numpy(dec).permute(2, 0, 1).bool(), masks)


def test_wrsis_predictions_are_valid():
    torch.manual_seed(0)
    model = RSIS(ModelConfig(hidden=16)).train()
    preds = predict(model, DATA, batch_size=2)
    assert model.training  # restored
    assert [p.image_id for p in preds] == DATA.ids
    for p, s in zip(preds, DATA):
        k = s.n_objects
        assert (p.height, p.width) == (32, 32)
        assert len(p.rles) == len(p.labels) == len(p.scores) == len(p.iou_pred) == k
        assert p.labels == sorted(s.labels.tolist())
        for r in p.rles:
            assert mask_utils.decode(r).shape == (32, 32)
        assert all(0.0 <= x <= 1.0 for x in p.scores + p.iou_pred)
        assert p.iou_true is not None and len(p.iou_true) == k
        assert all(0.0 <= x <= 1.0 for x in p.iou_true)


def test_wrsis_perfect_masks_get_iou_true_one(monkeypatch):
    """iou_true reads the GT: feeding the GT masks as the prediction gives IoU 1."""
    s = DATA[0]
    model = RSIS(ModelConfig(hidden=16))
    order = torch.sort(s.labels, stable=True).indices
    target = s.masks[order].float() * 20 - 10

    def fake_forward(images, class_seq):
        out = RSIS.forward(model, images, class_seq)
        out.mask_logits = target[None]
        return out

    monkeypatch.setattr(model, "forward", fake_forward)
    (pred,) = predict(model, DATA.subset([0]))
    assert pred.iou_true == [1.0] * s.n_objects


def test_plain_rsis_stops_on_the_stop_head():
    torch.manual_seed(0)
    model = RSIS(ModelConfig(hidden=16, weak=False, max_steps=4))
    with torch.no_grad():
        model.fc_stop.weight.zero_()
        model.fc_stop.bias.fill_(10.0)
    preds = predict(model, DATA, with_iou_true=False, inference="first_stop")
    assert all(len(p.rles) == 4 and p.iou_true is None for p in preds)
    assert all(p.steps == list(range(4)) for p in preds)
    assert all(1 <= lab <= 20 for p in preds for lab in p.labels)
    # the RSIS rule: every mask large enough, once per class
    faithful = predict(model, DATA, with_iou_true=False)
    assert any(p.steps for p in faithful)
    for p in faithful:
        kept = sorted(set(p.steps))
        assert set(kept) <= set(range(4)) and len(p.rles) == 20 * len(kept)
        assert sorted(zip(p.steps, p.labels)) == [(t, c) for t in kept for c in range(1, 21)]
    with torch.no_grad():
        model.fc_stop.bias.fill_(-10.0)
    for rule in ("first_stop", "rsis"):
        preds = predict(model, DATA, inference=rule)
        assert all(len(p.rles) == 0 and p.iou_true == [] for p in preds)


def test_image_score_mae_arithmetic():
    """Table 2 metric: mean over images of |mean iou_pred − mean iou_true|."""
    import pytest

    from basis.infer import image_score_mae
    from basis.types import ImagePrediction

    def pred(i, iou_pred, iou_true):
        n = len(iou_pred)
        return ImagePrediction(image_id=i, height=4, width=4, labels=[1] * n,
                               scores=[1.0] * n, iou_pred=iou_pred, iou_true=iou_true)

    preds = [
        pred(0, [0.5, 0.7], [0.9, 0.5]),    # score 0.6, true 0.7 → 0.1
        pred(1, [0.2], [0.8]),              # 0.2 vs 0.8 → 0.6
        pred(2, [], []),                    # no objects: 0 vs 0 → 0
        pred(3, [1.0, 0.0, 0.5], [0.0, 0.0, 0.0]),  # 0.5 vs 0 → 0.5
    ]
    assert image_score_mae(preds) == pytest.approx((0.1 + 0.6 + 0.0 + 0.5) / 4)
    assert image_score_mae(preds[:1]) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        image_score_mae([pred(0, [0.5], None)])
    with pytest.raises(ValueError):
        image_score_mae([])


def test_image_score_mae_of_predictions():
    from basis.infer import image_score_mae

    torch.manual_seed(0)
    preds = predict(RSIS(ModelConfig(hidden=16)), DATA)
    expect = sum(abs(p.image_score - p.image_iou_true) for p in preds) / len(preds)
    assert abs(image_score_mae(preds) - expect) < 1e-12
