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
    return _soft_iou_cost_flat(probs.flatten(1)[None], targets.flatten(1)[None],
                               valid.flatten()[None])[0]


def _soft_iou_cost_flat(probs: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor
                        ) -> torch.Tensor:
    """`soft_iou_cost` for a batch of images at once, maps flattened.

    Args:
        probs: (B, P, N) float in [0, 1].
        targets: (B, K, N) float/bool (zero rows for padding).
        valid: (B, N) bool.

    Returns:
        (B, P, K) float.
    """
    v = valid.to(probs.dtype)[:, None]
    p = probs * v
    t = targets.to(probs.dtype) * v
    inter = torch.bmm(p, t.transpose(1, 2))
    union = p.sum(2, keepdim=True) + t.sum(2)[:, None, :] - inter
    return 1.0 - inter / union.clamp(min=1e-6)


def hard_iou(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """IoU of paired binary masks over valid pixels (0 when both are empty).

    Args:
        pred, target: (N, H, W) bool.
        valid: (H, W) bool, or (N, H, W) for a valid map per pair.

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
    if step_classes is not None:
        assert gt_labels is not None, "step_classes needs gt_labels"
        return _assign(cost.detach().double().cpu().numpy(), step_classes.cpu().numpy(),
                       gt_labels.cpu().numpy())
    return _assign(cost.detach().double().cpu().numpy())


def _assign(cost: np.ndarray, step_classes: np.ndarray | None = None,
            gt_labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`match_steps` on a numpy (P, K) float64 cost."""
    if step_classes is not None:
        cost = cost + _CROSS_CLASS_COST * (step_classes[:, None] != gt_labels[None, :])
    return linear_sum_assignment(cost)


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
    b_size, t_steps, height, width = out.mask_logits.shape
    class_seq = batch.get("class_seq")

    # Ground truth per image, largest instance first, the T largest kept; padded to
    # (B, K, H·W) so that every image's (step, instance) costs come from one batched op.
    gt_masks, gt_labels = [], []
    for b in range(b_size):
        m = batch["masks"][b].to(device)
        order = area_order(m)[:t_steps]
        gt_masks.append(m[order])
        gt_labels.append(batch["labels"][b].to(device)[order])
    n_gt = [int(lab.numel()) for lab in gt_labels]
    k_max = max(n_gt, default=0)
    valid_px = ~torch.stack([ig.to(device) for ig in batch["ignore"]])       # (B, H, W)
    gt_pad = torch.zeros(b_size, k_max, height, width, dtype=torch.bool, device=device)
    lab_pad = torch.zeros(b_size, k_max, dtype=torch.long, device=device)
    for b in range(b_size):
        gt_pad[b, :n_gt[b]] = gt_masks[b]
        lab_pad[b, :n_gt[b]] = gt_labels[b]
    if class_seq is not None:
        class_seq = class_seq.to(device)
        n_valid = (class_seq > 0).sum(1).tolist()
    else:
        n_valid = [min(k, t_steps) for k in n_gt]

    # The stop head says "this step holds an object": 1 on valid steps, 0 on the first
    # step after them (RSIS's one extra position), later steps unsupervised.
    steps = torch.arange(t_steps, device=device)
    nv = torch.tensor(n_valid, device=device)
    supervised = steps[None, :] < (nv + 1).clamp(max=t_steps)[:, None]      # (B, T)
    stop_logits = out.stop_logits[supervised]
    stop_targets = (steps[None, :] < nv[:, None]).float()[supervised]

    rows_l, cols_l, imgs_l = [], [], []
    if k_max > 0 and max(n_valid) > 0:
        probs = torch.sigmoid(out.mask_logits).flatten(2)                    # (B, T, H·W)
        cost = _soft_iou_cost_flat(probs, gt_pad.flatten(2), valid_px.flatten(1))
        cost_np = cost.detach().double().cpu().numpy()
        seq_np = class_seq.cpu().numpy() if class_seq is not None else None
        lab_np = lab_pad.cpu().numpy()
        for b in range(b_size):
            nb, kb = n_valid[b], n_gt[b]
            if nb == 0 or kb == 0:
                continue
            if seq_np is not None:
                rows, cols = _assign(cost_np[b, :nb, :kb], seq_np[b, :nb], lab_np[b, :kb])
            else:
                rows, cols = _assign(cost_np[b, :nb, :kb])
            rows_l.append(rows)
            cols_l.append(cols)
            imgs_l.append(np.full(len(rows), b))
    zero = out.mask_logits.sum() * 0.0  # keeps the graph when a term is empty
    terms: dict[str, torch.Tensor] = {}
    if rows_l:
        # Matched pairs of all images, image by image, each in step order.
        img_t, rows_t, cols_t = (torch.as_tensor(np.concatenate(x), device=device,
                                                 dtype=torch.long)
                                 for x in (imgs_l, rows_l, cols_l))
        if "mask" in parts:
            terms["mask"] = cost[img_t, rows_t, cols_t].mean()
        if "class" in parts:
            terms["class"] = F.cross_entropy(out.class_logits[img_t, rows_t],
                                             lab_pad[img_t, cols_t])
        if "iou" in parts:
            with torch.no_grad():
                binar = out.mask_logits[img_t, rows_t] > 0
                iou_true = hard_iou(binar, gt_pad[img_t, cols_t], valid_px[img_t])
            target = iou_target_transform(iou_true, cfg.iou_target).detach()
            terms["iou"] = F.l1_loss(out.iou[img_t, rows_t], target)
    for k in ("mask", "class", "iou"):
        if k in parts and k not in terms:
            terms[k] = zero
    if "stop" in parts:
        terms["stop"] = _balanced_bce(stop_logits, stop_targets)
    terms = {k: terms[k] for k in LOSS_PARTS if k in terms}    # summed in LOSS_PARTS order
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
