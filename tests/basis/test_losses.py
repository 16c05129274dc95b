from __future__ import annotations

import math

import pytest
import torch

from basis.data import SyntheticConfig, SyntheticShapes, collate
from basis.losses import (
    LossConfig,
    area_order,
    class_sequence,
    hard_iou,
    iou_target_inverse,
    iou_target_transform,
    match_steps,
    rsis_loss,
    soft_iou_cost,
)
from basis.models import RSIS, ModelConfig, RSISOutput


def _rect(h, w, y0, y1, x0, x1):
    m = torch.zeros(h, w, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def _out(mask_logits, n_classes=3, iou=None):
    b, t = mask_logits.shape[:2]
    return RSISOutput(mask_logits=mask_logits, class_logits=torch.zeros(b, t, n_classes + 1),
                      stop_logits=torch.zeros(b, t),
                      iou=iou if iou is not None else torch.full((b, t), 0.5))


def _batch(masks, labels, ignore=None):
    h, w = masks.shape[-2:]
    return {"images": torch.zeros(1, 3, h, w), "masks": [masks], "labels": [labels],
            "ignore": [ignore if ignore is not None else torch.zeros(h, w, dtype=torch.bool)],
            "image_ids": [0]}


@pytest.mark.parametrize("kind", ["sqrt", "square", "identity"])
def test_iou_target_roundtrip(kind):
    iou = torch.linspace(0, 1, 11)
    t = iou_target_transform(iou, kind)
    assert ((t >= 0) & (t <= 1)).all()
    assert torch.allclose(iou_target_inverse(t, kind), iou, atol=1e-6)
    assert torch.allclose(iou_target_transform(torch.tensor([0.25]), "sqrt"), torch.tensor([0.5]))
    with pytest.raises(ValueError):
        LossConfig(iou_target="cube")


def test_area_order_and_class_sequence():
    big, small, mid = _rect(8, 8, 0, 8, 0, 4), _rect(8, 8, 0, 1, 7, 8), _rect(8, 8, 0, 4, 5, 7)
    masks = torch.stack([small, big, mid])
    labels = torch.tensor([3, 1, 2])
    assert area_order(masks).tolist() == [1, 2, 0]
    seq = class_sequence([labels, labels[:1]], [masks, masks[:1]], steps=4)
    assert seq.tolist() == [[1, 2, 3, 0], [3, 0, 0, 0]]
    assert class_sequence([labels], [masks], steps=2).tolist() == [[1, 2]]
    # where the orders differ: class id first (as at inference), or area first (RSIS)
    labels = torch.tensor([3, 2, 1])         # small=3, big=2, mid=1
    assert class_sequence([labels], [masks], steps=3).tolist() == [[1, 2, 3]]
    assert class_sequence([labels], [masks], steps=3, order="area").tolist() == [[2, 1, 3]]
    # truncation keeps the largest instances, then orders them by class
    assert class_sequence([labels], [masks], steps=2).tolist() == [[1, 2]]
    with pytest.raises(ValueError, match="order"):
        class_sequence([labels], [masks], steps=3, order="random")


def test_soft_iou_cost_excludes_ignore():
    a = _rect(4, 4, 0, 2, 0, 4).float()
    b = _rect(4, 4, 0, 4, 0, 4)
    ign = ~_rect(4, 4, 0, 2, 0, 4)
    everywhere = torch.ones(4, 4, dtype=torch.bool)
    assert soft_iou_cost(a[None], b[None], everywhere).item() == pytest.approx(0.5)
    assert soft_iou_cost(a[None], b[None], ~ign).item() == pytest.approx(0.0)
    assert hard_iou(a[None] > 0, b[None], ~ign).tolist() == [1.0]


def test_hungarian_matches_swapped_steps():
    big = _rect(16, 16, 0, 16, 0, 8)      # area 128: first after sorting
    small = _rect(16, 16, 2, 6, 10, 14)   # area 16
    gt = torch.stack([small, big])        # stored smallest first on purpose
    # step 0 predicts the small object, step 1 the big one
    logits = torch.stack([small, big]).float() * 20 - 10
    cost = soft_iou_cost(torch.sigmoid(logits), gt[area_order(gt)],
                         torch.ones(16, 16, dtype=torch.bool))
    rows, cols = match_steps(cost)
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]
    _, logs = rsis_loss(_out(logits[None]), _batch(gt, torch.tensor([1, 2])), LossConfig())
    assert logs["mask"] < 1e-3  # identity pairing would give ~1


def test_wrsis_matching_only_pairs_same_class():
    a = _rect(16, 16, 0, 8, 0, 16)    # class 1, area 128
    b = _rect(16, 16, 8, 14, 0, 16)   # class 2, area 96
    gt = torch.stack([a, b])
    labels = torch.tensor([1, 2])
    # step 0 asked for class 2 but draws object a; step 1 asked for class 1 draws b
    logits = torch.stack([a, b]).float() * 20 - 10
    cost = soft_iou_cost(torch.sigmoid(logits), gt, torch.ones(16, 16, dtype=torch.bool))
    assert match_steps(cost)[1].tolist() == [0, 1]  # unrestricted: by shape
    rows, cols = match_steps(cost, torch.tensor([2, 1]), labels)
    assert cols.tolist() == [1, 0]  # restricted: by class, despite the worse IoU
    batch = _batch(gt, labels)
    batch["class_seq"] = torch.tensor([[2, 1]])
    _, logs = rsis_loss(_out(logits[None]), batch, LossConfig())
    assert logs["mask"] > 0.9


def test_iou_term_is_l1_to_transformed_true_iou():
    gt = _rect(8, 8, 0, 4, 0, 8)                       # 32 px
    pred = _rect(8, 8, 0, 2, 0, 8)                     # 16 px inside: IoU 0.5
    logits = (pred.float() * 20 - 10)[None, None]
    out = _out(logits, iou=torch.tensor([[0.3]]))
    _, logs = rsis_loss(out, _batch(gt[None], torch.tensor([1])), LossConfig(), parts=("iou",))
    assert set(logs) == {"loss", "iou"}
    assert logs["iou"] == pytest.approx(abs(0.3 - math.sqrt(0.5)), abs=1e-5)
    _, logs = rsis_loss(out, _batch(gt[None], torch.tensor([1])),
                        LossConfig(iou_target="square"), parts=("iou",))
    assert logs["iou"] == pytest.approx(abs(0.3 - 0.25), abs=1e-5)


def test_stop_targets_are_balanced():
    gt = torch.stack([_rect(8, 8, 0, 4, 0, 8), _rect(8, 8, 4, 8, 0, 2)])
    logits = torch.zeros(1, 4, 8, 8)
    out = _out(logits)
    out.stop_logits = torch.tensor([[5.0, 5.0, -5.0, 123.0]])  # step 3 is unsupervised
    _, logs = rsis_loss(out, _batch(gt, torch.tensor([1, 1])), LossConfig(), parts=("stop",))
    assert logs["stop"] == pytest.approx(math.log1p(math.exp(-5.0)), rel=1e-4)


def test_loss_decreases_when_overfitting_a_tiny_batch():
    torch.manual_seed(0)
    ds = SyntheticShapes(SyntheticConfig(image_size=32), seed=0, ids=range(2))
    batch = collate([ds[i] for i in range(2)])
    steps = max(int(lab.numel()) for lab in batch["labels"])
    batch["class_seq"] = class_sequence(batch["labels"], batch["masks"], steps)
    model = RSIS(ModelConfig(hidden=32))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(20):
        loss, logs = rsis_loss(model(batch["images"], batch["class_seq"]), batch, LossConfig())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(logs)
    assert all(math.isfinite(h["loss"]) for h in history)
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]
    # the soft-IoU term falls slowly from a random encoder, but it must fall
    assert history[-1]["mask"] < history[0]["mask"] - 0.005


# --- the batched loss against the per-image one ----------------------------------------
def _reference_loss(out, batch, cfg, parts):
    """rsis_loss as first written (before issue 14 batched it): one image at a time, its
    own cost matrix, Hungarian matching and gathers. Kept to check the batched version."""
    import torch.nn.functional as F
    from scipy.optimize import linear_sum_assignment

    from basis.losses import _balanced_bce

    def cost_of(probs, targets, valid):
        v = valid.flatten().to(probs.dtype)
        p = probs.flatten(1) * v
        t = targets.flatten(1).to(probs.dtype) * v
        inter = p @ t.T
        union = p.sum(1, keepdim=True) + t.sum(1)[None, :] - inter
        return 1.0 - inter / union.clamp(min=1e-6)

    t_steps = out.mask_logits.shape[1]
    class_seq = batch.get("class_seq")
    mask_terms, cls_logits, cls_targets, iou_pred, iou_true = [], [], [], [], []
    stop_logits, stop_targets = [], []
    for b in range(out.mask_logits.shape[0]):
        order = area_order(batch["masks"][b])
        gt_masks = batch["masks"][b][order][:t_steps]
        gt_labels = batch["labels"][b][order][:t_steps]
        valid_px = ~batch["ignore"][b]
        if class_seq is not None:
            n_valid = int((class_seq[b] > 0).sum())
            step_cls = class_seq[b][:n_valid]
        else:
            n_valid = min(int(gt_labels.numel()), t_steps)
            step_cls = None
        n_stop = min(n_valid + 1, t_steps)
        stop_logits.append(out.stop_logits[b, :n_stop])
        stop_targets.append((torch.arange(n_stop) < n_valid).float())
        if n_valid == 0 or gt_labels.numel() == 0:
            continue
        cost = cost_of(torch.sigmoid(out.mask_logits[b, :n_valid]), gt_masks, valid_px)
        c = cost.detach().double().numpy()
        if step_cls is not None:
            c = c + 1e3 * (step_cls.numpy()[:, None] != gt_labels.numpy()[None, :])
        rows, cols = (torch.as_tensor(x, dtype=torch.long) for x in linear_sum_assignment(c))
        mask_terms.append(cost[rows, cols])
        cls_logits.append(out.class_logits[b, rows])
        cls_targets.append(gt_labels[cols])
        with torch.no_grad():
            iou_true.append(hard_iou(out.mask_logits[b, rows] > 0, gt_masks[cols], valid_px))
        iou_pred.append(out.iou[b, rows])
    zero = out.mask_logits.sum() * 0.0
    terms = {}
    if "mask" in parts:
        terms["mask"] = torch.cat(mask_terms).mean() if mask_terms else zero
    if "class" in parts:
        terms["class"] = (F.cross_entropy(torch.cat(cls_logits), torch.cat(cls_targets))
                          if cls_logits else zero)
    if "stop" in parts:
        terms["stop"] = _balanced_bce(torch.cat(stop_logits), torch.cat(stop_targets))
    if "iou" in parts:
        terms["iou"] = (F.l1_loss(torch.cat(iou_pred), iou_target_transform(
            torch.cat(iou_true), cfg.iou_target).detach()) if iou_pred else zero)
    weights = {"mask": cfg.w_mask, "class": cfg.w_class, "stop": cfg.w_stop, "iou": cfg.w_iou}
    return sum((weights[k] * v for k, v in terms.items()), zero), terms


@pytest.mark.parametrize("weak", [True, False])
@pytest.mark.parametrize("parts", [("mask", "class", "stop", "iou"), ("iou",), ("stop", "mask")])
@pytest.mark.parametrize("steps", [3, 6])
def test_batched_loss_matches_the_per_image_reference(weak, parts, steps):
    """Same values and gradients as the per-image loss, including an image without
    objects, ignore pixels (the synthetic void band) and more steps than objects."""
    data = SyntheticShapes(SyntheticConfig(image_size=40, n_classes=5), seed=3, ids=range(5))
    batch = collate([data[i] for i in range(5)])
    assert any(ig.any() for ig in batch["ignore"])
    batch["masks"][2] = batch["masks"][2][:0]
    batch["labels"][2] = batch["labels"][2][:0]
    if weak:
        batch["class_seq"] = class_sequence(batch["labels"], batch["masks"], steps)
    gen = torch.Generator().manual_seed(steps)
    raw = [torch.randn(5, steps, 40, 40, generator=gen) * 3,
           torch.randn(5, steps, 6, generator=gen), torch.randn(5, steps, generator=gen),
           torch.rand(5, steps, generator=gen)]
    results = []
    for fn in (rsis_loss, _reference_loss):
        leaves = [x.clone().requires_grad_() for x in raw]
        total, terms = fn(RSISOutput(*leaves), batch, LossConfig(), parts)
        total.backward()
        results.append((total, terms, [x.grad for x in leaves]))
    (total, logs, grads), (ref_total, ref_terms, ref_grads) = results
    assert set(logs) == {"loss", *parts}
    assert total.item() == pytest.approx(ref_total.item(), rel=1e-6, abs=1e-7)
    for k, v in ref_terms.items():
        assert logs[k] == pytest.approx(v.item(), rel=1e-6, abs=1e-7), k
    for g, r in zip(grads, ref_grads):
        assert (g is None) == (r is None)
        if r is not None:
            assert torch.allclose(g, r, rtol=1e-5, atol=1e-8)
