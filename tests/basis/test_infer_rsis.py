"""Plain RSIS inference: the RSIS-faithful rule against the first-stop rule, and AP
evaluation with several detections per mask."""
from __future__ import annotations

import math

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch

from basis.infer import RSIS_MIN_AREA, RSIS_STOP_TH, predict, rsis_detections
from basis.metrics.ap import evaluate_ap, voc_ap_r
from basis.models import RSIS, ModelConfig
from basis.models.rsis import RSISOutput
from basis.types import ImagePrediction, Sample

H = W = 32
C = 4
BIG = 12.0  # a logit far enough from 0 that σ is ~0 or ~1


def _box(y0, y1, x0, x1) -> torch.Tensor:
    m = torch.zeros(H, W, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def _sample(masks, labels, image_id=0, ignore=None) -> Sample:
    masks = torch.stack(masks) if masks else torch.zeros(0, H, W, dtype=torch.bool)
    return Sample(image=torch.rand(3, H, W), masks=masks,
                  labels=torch.tensor(labels, dtype=torch.long),
                  ignore=torch.zeros(H, W, dtype=torch.bool) if ignore is None else ignore,
                  image_id=image_id)


def _scripted(masks: list[torch.Tensor], classes: list[int], stop_logits: list[float],
              monkeypatch, class_logit: float = 5.0) -> RSIS:
    """A plain RSIS whose forward returns the given masks, class and stop logits per step
    (the same for every image of a batch)."""
    t_steps = len(masks)
    model = RSIS(ModelConfig(hidden=16, weak=False, iou_head=False, n_classes=C,
                             max_steps=t_steps))
    mask_logits = torch.stack([m.float() * 2 * BIG - BIG for m in masks])     # (T, H, W)
    cls = torch.zeros(t_steps, C + 1)
    cls[torch.arange(t_steps), torch.tensor(classes)] = class_logit
    stop = torch.tensor(stop_logits)

    def forward(images, class_seq=None):
        b = images.shape[0]
        return RSISOutput(mask_logits=mask_logits.expand(b, -1, -1, -1).clone(),
                          class_logits=cls.expand(b, -1, -1).clone(),
                          stop_logits=stop.expand(b, -1).clone(),
                          iou=torch.zeros(b, t_steps))

    monkeypatch.setattr(model, "forward", forward)
    return model, cls, stop


def _decode(rle) -> torch.Tensor:
    return torch.from_numpy(mask_utils.decode(rle)).bool()


def test_rsis_rule_emits_masks_after_a_low_objectness_step(monkeypatch):
    a, b, c = _box(0, 8, 0, 8), _box(10, 20, 10, 20), _box(22, 30, 2, 14)
    model, cls, stop = _scripted([a, b, c], [1, 2, 3], [BIG, -BIG, BIG], monkeypatch)
    data = [_sample([a, c], [1, 3])]

    (old,) = predict(model, data, inference="first_stop")
    assert old.steps == [0] and old.labels == [1]
    assert torch.equal(_decode(old.rles[0]), a)

    (new,) = predict(model, data)                     # model.cfg.inference == "rsis"
    assert model.cfg.inference == "rsis"
    assert sorted(set(new.steps)) == [0, 2]           # step 1 skipped, step 2 kept
    for k, t in enumerate(new.steps):
        assert torch.equal(_decode(new.rles[k]), [a, b, c][t])
    # every class once per kept mask, scored p(class)·σ(stop)
    prob = torch.softmax(cls, -1)
    expect = {(t, k): float(prob[t, k] * torch.sigmoid(stop[t]))
              for t in (0, 2) for k in range(1, C + 1)}
    got = {(t, lab): s for t, lab, s in zip(new.steps, new.labels, new.scores)}
    assert got.keys() == expect.keys()
    assert all(got[key] == pytest.approx(expect[key], rel=1e-6) for key in expect)
    # step 2's mask is a true positive of class 3 and its best detection
    best = new.primary()
    assert [new.labels[k] for k in best] == [1, 3]
    assert [new.iou_true[k] for k in best] == [1.0, 1.0]
    assert new.image_iou_true == 1.0
    # AP: first-stop misses the object of class 3, the RSIS rule finds both
    ap_old = evaluate_ap(data, [old], n_classes=C)
    ap_new = evaluate_ap(data, [new], n_classes=C)
    assert ap_old["per_class"][3] == 0.0 and ap_new["per_class"][3] == pytest.approx(1.0)
    assert ap_new["ap50"] == pytest.approx(1.0)
    assert ap_old["ap50"] == pytest.approx(1 / 2)


def test_rsis_rule_drops_small_masks_counting_void_out(monkeypatch):
    need = math.ceil(RSIS_MIN_AREA * H * W)         # smallest kept area, in pixels
    small = torch.zeros(H, W, dtype=torch.bool)
    small.view(-1)[: need - 1] = True
    enough = torch.zeros(H, W, dtype=torch.bool)
    enough.view(-1)[H * W - need:] = True
    model, _, _ = _scripted([small, enough], [1, 2], [BIG, BIG], monkeypatch)
    (pred,) = predict(model, [_sample([], [])], with_iou_true=False)
    assert set(pred.steps) == {1}
    # the same mask, one of its pixels void: now under the limit
    void = torch.zeros(H, W, dtype=torch.bool)
    void.view(-1)[-1] = True
    (pred,) = predict(model, [_sample([], [], ignore=void)], with_iou_true=False)
    assert pred.steps == [] and pred.rles == []
    (pred,) = predict(model, [_sample([], [], ignore=void)], with_iou_true=False,
                      min_area=0.0)
    assert set(pred.steps) == {0, 1}


def test_rsis_detections_thresholds():
    t_steps = 3
    logits = torch.tensor([[0.0, 3.0, 1.0, 0.0, -2.0],
                           [0.0, 0.0, 0.0, 4.0, 0.0],
                           [0.0, 1.0, 2.0, 0.0, 0.0]])
    prob = torch.softmax(logits, -1)
    stop_p = torch.tensor([0.9, RSIS_STOP_TH, RSIS_STOP_TH - 0.01])
    masks = torch.ones(t_steps, H, W, dtype=torch.bool)
    steps, labels, scores = rsis_detections(prob, stop_p, masks)
    # σ(stop) == stop_th is kept (RSIS skips only those under it), just below is not
    assert steps.tolist() == [0] * C + [1] * C
    assert labels.tolist() == list(range(1, C + 1)) * 2
    assert torch.allclose(scores, (prob[:2, 1:] * stop_p[:2, None]).flatten())
    # top_k keeps each mask's best classes; equal scores fall to the lower class id
    steps, labels, _ = rsis_detections(prob, stop_p, masks, top_k=2)
    top2 = {(0, k + 1) for k in prob[0, 1:].topk(2).indices.tolist()}
    assert {(0, int(lab)) for s, lab in zip(steps, labels) if s == 0} == top2
    best1 = int(prob[1, 1:].argmax()) + 1
    tied = min(k for k in range(1, C + 1) if k != best1)
    assert {int(lab) for s, lab in zip(steps, labels) if s == 1} == {best1, tied}
    # min_score leaves out weak classes but never a kept mask's best one
    cut = float((prob[0, 1:] * stop_p[0]).sort().values[-2]) + 1e-6
    steps, labels, _ = rsis_detections(prob, stop_p, masks, min_score=cut)
    assert list(zip(steps.tolist(), labels.tolist())) == [(0, 1), (1, 3)]
    # stop_th 0 keeps every step
    steps, _, _ = rsis_detections(prob, stop_p, masks, stop_th=0.0)
    assert sorted(set(steps.tolist())) == [0, 1, 2]


def test_first_stop_rule_and_errors(monkeypatch):
    a = _box(0, 8, 0, 8)
    model, _, _ = _scripted([a, a, a], [1, 2, 3], [BIG, BIG, -BIG], monkeypatch)
    (pred,) = predict(model, [_sample([a], [1])], inference="first_stop")
    assert pred.steps == [0, 1] and pred.labels == [1, 2]
    with pytest.raises(ValueError, match="inference"):
        predict(model, [_sample([a], [1])], inference="greedy")
    with pytest.raises(ValueError, match="top_k"):
        predict(model, [_sample([a], [1])], top_k=0)
    with pytest.raises(ValueError, match="inference"):
        ModelConfig(inference="greedy")


def test_image_score_counts_each_mask_once():
    p = ImagePrediction(image_id=0, height=H, width=W, rles=[{}] * 3, labels=[1, 2, 1],
                        scores=[0.2, 0.7, 0.4], iou_pred=[0.8, 0.8, 0.2],
                        iou_true=[0.0, 0.5, 0.9], steps=[0, 0, 3])
    assert p.primary() == [1, 2]
    assert p.image_score == pytest.approx((0.8 + 0.2) / 2)
    assert p.image_iou_true == pytest.approx((0.5 + 0.9) / 2)
    flat = ImagePrediction(image_id=0, height=H, width=W, scores=[0.1, 0.2],
                           iou_pred=[0.8, 0.2], iou_true=[0.0, 0.5])
    assert flat.primary() == [0, 1] and flat.image_score == pytest.approx(0.5)


def test_ap_with_one_mask_in_several_classes():
    """A mask repeated under every class competes only within each class."""
    ma, mb = _box(0, 10, 0, 10), _box(12, 30, 12, 30)
    samples = [_sample([ma], [2], image_id=1), _sample([mb], [3], image_id=2)]
    (ra,), (rb,) = ([{**r, "counts": r["counts"].decode()} for r in
                     mask_utils.encode(np.asfortranarray(m.numpy()[..., None].astype(np.uint8)))]
                    for m in (ma, mb))
    # image 1: its mask as class 2 (right) and class 3 (wrong, but ranked above image
    # 2's right class-3 detection); image 2: class 3 (right) and class 2 (wrong, last)
    preds = [ImagePrediction(1, H, W, rles=[ra, dict(ra)], labels=[2, 3], scores=[0.9, 0.6],
                             iou_pred=[0.0, 0.0], steps=[0, 0]),
             ImagePrediction(2, H, W, rles=[rb, dict(rb)], labels=[3, 2], scores=[0.5, 0.1],
                             iou_pred=[0.0, 0.0], steps=[0, 0])]
    # class 2: TP then FP → AP 1; class 3: FP then TP → precision 1/2 at full recall
    expect = {2: 1.0, 3: 1 / 2}
    for ap in (evaluate_ap(samples, preds, n_classes=C), voc_ap_r(samples, preds, n_classes=C)):
        assert ap["per_class"][2] == pytest.approx(expect[2])
        assert ap["per_class"][3] == pytest.approx(expect[3])
        assert ap["ap50"] == pytest.approx(sum(expect.values()) / len(expect))
