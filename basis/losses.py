"""Training objective of RSIS / W-RSIS / IoU-W-RSIS.

Per image, the ground-truth instances are sorted by area, largest first, and matched to
the predicted steps with the Hungarian algorithm on the soft-IoU cost (for W-RSIS only
same-class pairs may match: step t was asked for class ``class_seq[t]``). On matched
pairs the loss is

    w_mask · soft-IoU loss + w_class · class NLL + w_stop · balanced stop BCE
    + w_iou · L1(predicted IoU, transform(IoU of the binarised mask)).

The IoU target transform. Section 5 of the paper says "we predict the squared IoU" to
"give more relevance to the predictions of low IoUs", while section 6.1 says "we optimize
the squared root of the IoU … this option leads to the best results" (Table 2). Only the
square root actually spreads the low IoUs apart (sqrt(0.04)=0.2), so ``"sqrt"`` is the
default; ``"square"`` reproduces the literal text of section 5, ``"identity"`` regresses
the IoU itself. The network's IoU output lives in target space; `iou_target_inverse`
maps it back to an IoU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from basis.models.rsis import RSISOutput

IOU_TARGETS = ("sqrt", "square", "identity")
LOSS_PARTS = ("mask", "class", "stop", "iou")
_CROSS_CLASS_COST = 1e3  # larger than any soft-IoU cost (≤ 1), so never preferred


@dataclass(frozen=True)
class LossConfig:
    """Weights of the loss terms and the IoU regression target.

    Attributes:
        w_mask, w_class, w_stop, w_iou: term weights (RSIS: 1, 0.1, 0.5; IoU: 1).
        iou_target: space the IoU branch regresses in: "sqrt" (default, best in the
            paper's Table 2), "square" (section 5's text) or "identity".
    """

    w_mask: float = 1.0
    w_class: float = 0.1
    w_stop: float = 0.5
    w_iou: float = 1.0
    iou_target: str = "sqrt"

    def __post_init__(self) -> None:
        if self.iou_target not in IOU_TARGETS:
            raise ValueError(f"iou_target={self.iou_target!r} not in {IOU_TARGETS}")


def iou_target_transform(iou: torch.Tensor, kind: str = "sqrt") -> torch.Tensor:
    """IoU in [0, 1] → regression target in [0, 1]."""
    if kind == "sqrt":
        return iou.clamp(min=0.0).sqrt()
    if kind == "square":
        return iou * iou
    if kind == "identity":
        return iou
    raise ValueError(f"unknown iou_target {kind!r}")


def iou_target_inverse(target: torch.Tensor, kind: str = "sqrt") -> torch.Tensor:
    """Regression target space → IoU in [0, 1] (inverse of `iou_target_transform`)."""
    if kind == "sqrt":
        return target * target
    if kind == "square":
        return target.clamp(min=0.0).sqrt()
    if kind == "identity":
        return target
    raise ValueError(f"unknown iou_target {kind!r}")


def area_order(masks: torch.Tensor) -> torch.Tensor:
    """Indices that sort instances by area, largest first (ties keep their order).

    Args:
        masks: (K, H, W) bool.

    Returns:
        (K,) long.
    """
    areas = masks.flatten(1).sum(1)
    return torch.sort(areas, descending=True, stable=True).indices


CLASS_ORDERS = ("class", "area")


def class_sequence(labels_list: Sequence[torch.Tensor], masks_list: Sequence[torch.Tensor],
                   steps: int, order: str = "class") -> torch.Tensor:
    """W-RSIS training inputs: each image's weak labels, one step per instance.

    ``order="class"`` (default): by class id, as at inference, where only the IL+C
    labels are known (`basis.infer.weak_class_sequence`); a network trained on another
    order meets an unseen sequence on every multi-class image. ``"area"``: RSIS's
    ground-truth order, largest instance first (reproducible in training only).

    Args:
        labels_list: per image (K_b,) long.
        masks_list: per image (K_b, H, W) bool.
        steps: T; longer sequences keep their T largest instances.
        order: "class" or "area".

    Returns:
        (B, T) long, padded with 0.
    """
    if order not in CLASS_ORDERS:
        raise ValueError(f"order={order!r} not in {CLASS_ORDERS}")
    out = torch.zeros(len(labels_list), steps, dtype=torch.long)
    for b, (lab, msk) in enumerate(zip(labels_list, masks_list)):
        k = min(int(lab.numel()), steps)
        kept = lab[area_order(msk)][:k].cpu()          # the T largest, largest first
        if order == "class":                             # stable: by class, then area
            kept = kept[torch.sort(kept, stable=True).indices]
        out[b, :k] = kept
    return out


def soft_iou_cost(probs: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor
                  ) -> torch.Tensor:
    """Pairwise soft-IoU loss 1 − Σpt / Σ(p + t − pt) over valid pixels.

    Args:
        probs: (P, H, W) float in [0, 1].
        targets: (K, H, W) float/bool.
        valid: (H, W) bool, False on ignore pixels.

    Returns:
        (P, K) float, differentiable w.r.t. ``probs``.
    """
    v = valid.flatten().to(probs.dtype)
    p = probs.flatten(1) * v
    t = targets.flatten(1).to(probs.dtype) * v
    inter = p @ t.T
    union = p.sum(1, keepdim=True) + t.sum(1)[None, :] - inter
    return 1.0 - inter / union.clamp(min=1e-6)


def hard_iou(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """IoU of paired binary masks over valid pixels (0 when both are empty).

    Args:
        pred, target: (N, H, W) bool.
        valid: (H, W) bool.

    Returns:
        (N,) float.
    """
    p = (pred & valid).flatten(1)
    t = (target & valid).flatten(1)
    inter = (p & t).sum(1).float()
    union = (p | t).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


def match_steps(cost: torch.Tensor, step_classes: torch.Tensor | None = None,
                gt_labels: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian assignment of steps to ground-truth instances.

    Args:
        cost: (P, K) soft-IoU cost.
        step_classes: (P,) the class each step was asked for (W-RSIS), or None.
        gt_labels: (K,) labels of the instances, needed with ``step_classes``.

    Returns:
        (rows, cols): matched step indices and instance indices, min(P, K) pairs,
        sorted by step.
    """
    c = cost.detach().double().cpu().numpy()
    if step_classes is not None:
        assert gt_labels is not None, "step_classes needs gt_labels"
        cross = step_classes.cpu().numpy()[:, None] != gt_labels.cpu().numpy()[None, :]
        c = c + _CROSS_CLASS_COST * cross
    rows, cols = linear_sum_assignment(c)
    return rows, cols


def rsis_loss(out: RSISOutput, batch: dict, cfg: LossConfig,
              parts: Sequence[str] = LOSS_PARTS) -> tuple[torch.Tensor, dict[str, float]]:
    """The RSIS objective on one batch.

    Args:
        out: the network output for ``batch``, T steps.
        batch: `basis.data.collate` output; with ``class_seq`` (B, T) long when the
            network is W-RSIS (as built by `class_sequence`), then step t of image b
            was asked for ``class_seq[b, t]`` and only steps with a class are valid.
            Without it (plain RSIS), the first min(K_b, T) steps are valid.
        cfg: weights and IoU target.
        parts: loss terms to include (e.g. ``("iou",)`` while only the IoU branch trains).

    Returns:
        (total loss, {"loss": total, term: value for each term in parts}) — the dict
        holds detached floats, for logging.
    """
    unknown = set(parts) - set(LOSS_PARTS)
    if unknown:
        raise ValueError(f"unknown loss parts {sorted(unknown)}")
    device = out.mask_logits.device
    b_size, t_steps = out.mask_logits.shape[:2]
    class_seq = batch.get("class_seq")

    mask_terms, cls_logits, cls_targets, iou_pred, iou_true = [], [], [], [], []
    stop_logits, stop_targets = [], []
    for b in range(b_size):
        gt_masks = batch["masks"][b].to(device)
        gt_labels = batch["labels"][b].to(device)
        valid_px = ~batch["ignore"][b].to(device)
        order = area_order(gt_masks)
        gt_masks, gt_labels = gt_masks[order][:t_steps], gt_labels[order][:t_steps]
        if class_seq is not None:
            steps_b = class_seq[b].to(device)
            n_valid = int((steps_b > 0).sum())
            step_cls = steps_b[:n_valid]
        else:
            n_valid = min(int(gt_labels.numel()), t_steps)
            step_cls = None
        # The stop head says "this step holds an object": 1 on valid steps, 0 on the
        # first step after them (RSIS's one extra position), later steps unsupervised.
        n_stop = min(n_valid + 1, t_steps)
        stop_logits.append(out.stop_logits[b, :n_stop])
        stop_targets.append((torch.arange(n_stop, device=device) < n_valid).float())
        if n_valid == 0 or gt_labels.numel() == 0:
            continue
        probs = torch.sigmoid(out.mask_logits[b, :n_valid])
        cost = soft_iou_cost(probs, gt_masks, valid_px)
        rows, cols = match_steps(cost, step_cls, gt_labels if step_cls is not None else None)
        rows_t = torch.as_tensor(rows, device=device, dtype=torch.long)
        cols_t = torch.as_tensor(cols, device=device, dtype=torch.long)
        mask_terms.append(cost[rows_t, cols_t])
        cls_logits.append(out.class_logits[b, rows_t])
        cls_targets.append(gt_labels[cols_t])
        with torch.no_grad():
            binar = out.mask_logits[b, rows_t] > 0
            iou_true.append(hard_iou(binar, gt_masks[cols_t], valid_px))
        iou_pred.append(out.iou[b, rows_t])

    zero = out.mask_logits.sum() * 0.0  # keeps the graph when a term is empty
    terms: dict[str, torch.Tensor] = {}
    if "mask" in parts:
        terms["mask"] = torch.cat(mask_terms).mean() if mask_terms else zero
    if "class" in parts:
        terms["class"] = (F.cross_entropy(torch.cat(cls_logits), torch.cat(cls_targets))
                          if cls_logits else zero)
    if "stop" in parts:
        terms["stop"] = _balanced_bce(torch.cat(stop_logits), torch.cat(stop_targets))
    if "iou" in parts:
        if iou_pred:
            target = iou_target_transform(torch.cat(iou_true), cfg.iou_target).detach()
            terms["iou"] = F.l1_loss(torch.cat(iou_pred), target)
        else:
            terms["iou"] = zero
    weights = {"mask": cfg.w_mask, "class": cfg.w_class, "stop": cfg.w_stop, "iou": cfg.w_iou}
    total = sum((weights[k] * v for k, v in terms.items()), zero)
    logs = {"loss": float(total.detach())}
    logs.update({k: float(v.detach()) for k, v in terms.items()})
    return total, logs


def _balanced_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE with positives and negatives weighted to equal total weight.

    Args:
        logits, targets: (N,) float.
    """
    if logits.numel() == 0:
        return logits.sum() * 0.0
    n_pos = targets.sum()
    n_neg = targets.numel() - n_pos
    w = torch.where(targets > 0, 0.5 / n_pos.clamp(min=1), 0.5 / n_neg.clamp(min=1))
    if n_pos == 0 or n_neg == 0:
        w = torch.full_like(targets, 1.0 / targets.numel())
    return (F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * w).sum()
