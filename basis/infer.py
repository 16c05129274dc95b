"""Inference: run a trained network over a dataset and return `ImagePrediction` records.

W-RSIS (the annotation network) is given each image's weak label, image-level classes
plus counts (IL+C): the class ids repeated by their counts. The largest-first order used
in training is unknown at test time, so the sequence is ordered by class id, and the
network runs exactly as many steps as the image has instances; each step is one
detection with its input class, scored ``p(label) · σ(stop)``.

Plain RSIS runs ``max_steps`` steps and is read by one of two rules
(`ModelConfig.inference`, or the ``inference`` argument of `predict`):

* ``"rsis"`` (default), RSIS's own evaluation (imatge-upc/rsis ``src/eval.py`` with the
  defaults of ``src/args.py``: ``stop_th=0.5``, ``min_size=0.001``, ``mask_th=0.5``):
  every step is scanned and none ends the sequence. A step whose σ(stop) is under
  ``stop_th`` is skipped, and so is a mask (logit > 0) covering under ``min_area`` of
  the image, void pixels not counted. Each kept mask is repeated once per object class
  ``c`` with score ``p(c) · σ(stop)`` (p the softmax of the class head, end-of-sequence
  excluded from the classes but not from the softmax), so one mask yields up to C
  detections, each ranked in its own class by COCOeval. ``min_score`` and ``top_k``
  thin them (RSIS keeps all: 0.0 and None); a kept mask always keeps its best class.
* ``"first_stop"``: the steps before the first one with σ(stop) ≤ 0.5, one detection
  each, labelled with the most probable object class.

`ImagePrediction.steps` records the step each detection comes from, so image-level
scores (Eq. 2) count each mask once.

The same forward pass also gives each image its uncertainties (`step_uncertainties`,
``ImagePrediction.extras``: the acquisition baselines of `basis.selection.UNCERTAINTIES`),
averaged over the steps it emits, and optionally the encoder's pooled features
(``with_features``, the core-set baseline).
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import pycocotools.mask as mask_utils
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from basis.data.synthetic import collate
from basis.losses import LossConfig, iou_target_inverse
from basis.metrics.iou import image_score_mae as _scores_mae
from basis.metrics.iou import match_true_iou
from basis.models.rsis import INFERENCE_RULES, RSIS, RSISOutput
from basis.types import ImagePrediction

AMP_MODES = ("none", "bf16", "fp16")
# RSIS's evaluation defaults (imatge-upc/rsis src/args.py: -stop_th, -min_size).
RSIS_STOP_TH = 0.5
RSIS_MIN_AREA = 0.001
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(amp: str, device: str | torch.device) -> torch.dtype | None:
    """The autocast dtype of an ``amp`` mode on ``device``: None for "none" and on any
    device but CUDA (mixed precision is a GPU feature here; CPU runs stay fp32)."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp={amp!r} not in {AMP_MODES}")
    return _AMP_DTYPES.get(amp) if torch.device(device).type == "cuda" else None


def autocast(device: str | torch.device, dtype: torch.dtype | None
             ) -> contextlib.AbstractContextManager:
    """``torch.autocast`` with ``dtype`` on ``device``; a null context for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def float_output(out: RSISOutput) -> RSISOutput:
    """The output in float32 (the same tensors when already float32), so that losses,
    matching, IoUs and scores are computed in full precision after an autocast pass."""
    return RSISOutput(
        mask_logits=out.mask_logits.float(), class_logits=out.class_logits.float(),
        stop_logits=out.stop_logits.float(), iou=out.iou.float(),
        iou_features=None if out.iou_features is None else out.iou_features.float())


def forward_for_inference(model: RSIS, images: torch.Tensor,
                          class_seq: torch.Tensor | None, amp: str = "none",
                          channels_last: bool = False) -> RSISOutput:
    """One forward pass as inference runs it, output in float32.

    Args:
        model: the network, on the device of ``images``.
        images: (B, 3, H, W) float in [0, 1].
        class_seq: (B, T) W-RSIS inputs or None.
        amp: "none" | "bf16" | "fp16": autocast dtype on CUDA, ignored elsewhere.
        channels_last: on CUDA, feed channels_last images (the model should be
            channels_last too); ignored elsewhere.
    """
    if channels_last and images.is_cuda:
        images = images.contiguous(memory_format=torch.channels_last)
    with autocast(images.device, amp_dtype(amp, images.device)):
        out = model(images, class_seq)
    return float_output(out)


def image_score_mae(preds: Sequence[ImagePrediction]) -> float:
    """The Table 2 metric: mean over images of |predicted − true image IoU score|.

    The predicted score of an image is Eq. 2 (`ImagePrediction.image_score`, the mean
    predicted IoU of its objects), the true one the oracle score (`image_iou_true`, the
    mean true IoU); an image without objects scores 0.0 on both sides.

    Args:
        preds: predictions made with ground truth (``predict(..., with_iou_true=True)``).

    Returns:
        The MAE in [0, 1] (the paper prints it ×100).

    Raises:
        ValueError: no predictions, or one without ``iou_true``.
    """
    missing = [p.image_id for p in preds if p.iou_true is None]
    if missing:
        raise ValueError(f"images {missing[:5]} have no iou_true: predict with ground truth")
    return _scores_mae([p.image_score for p in preds],
                       [float(p.image_iou_true) for p in preds])  # type: ignore[arg-type]


def weak_class_sequence(labels_list: Sequence[torch.Tensor]) -> torch.Tensor:
    """W-RSIS test-time inputs: each image's IL+C labels ordered by class id.

    Args:
        labels_list: per image (K_b,) long.

    Returns:
        (B, max(1, max K_b)) long, padded with 0.
    """
    steps = max([1] + [int(lab.numel()) for lab in labels_list])
    out = torch.zeros(len(labels_list), steps, dtype=torch.long)
    for b, lab in enumerate(labels_list):
        out[b, : lab.numel()] = torch.sort(lab.cpu()).values
    return out


def encode_rles(masks: torch.Tensor) -> list[dict]:
    """Binary masks → COCO RLEs with ``counts`` as str.

    Args:
        masks: (N, H, W) bool.
    """
    if masks.shape[0] == 0:
        return []
    arr = np.asfortranarray(masks.permute(1, 2, 0).cpu().numpy().astype(np.uint8))
    rles = mask_utils.encode(arr)
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


def emitted_objects(out: RSISOutput, b: int, class_seq: torch.Tensor | None,
                    n_weak: int) -> tuple[int, torch.Tensor]:
    """Which steps of image ``b`` inference reports as objects, and their labels.

    Args:
        out: the network output for the batch.
        b: index of the image in the batch.
        class_seq: (B, T) the W-RSIS inputs (`weak_class_sequence`), or None for RSIS.
        n_weak: the image's number of weak labels (W-RSIS only).

    Returns:
        (n, labels): the first ``n`` steps are the objects, ``labels`` (n,) long their
        classes: the input classes for W-RSIS, the most probable object class for RSIS
        (which stops before the first step with σ(stop) ≤ 0.5).
    """
    if class_seq is not None:
        return n_weak, class_seq[b, :n_weak]
    above = (out.stop_logits[b] > 0).tolist()
    n = above.index(False) if False in above else len(above)
    return n, out.class_logits[b, :n, 1:].argmax(-1) + 1


def rsis_detections(class_prob: torch.Tensor, stop_prob: torch.Tensor, masks: torch.Tensor,
                    ignore: torch.Tensor | None = None, *, stop_th: float = RSIS_STOP_TH,
                    min_area: float = RSIS_MIN_AREA, min_score: float = 0.0,
                    top_k: int | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RSIS-faithful detections of one image: one per (kept mask, class).

    Args:
        class_prob: (T, C+1) softmax of the class head, index 0 end-of-sequence.
        stop_prob: (T,) σ(stop), the objectness of each step.
        masks: (T, H, W) bool binarised masks.
        ignore: (H, W) bool void pixels, not counted in a mask's area; or None.
        stop_th: a step with σ(stop) < stop_th is skipped (later steps still count).
        min_area: a mask with fewer than ``min_area · H · W`` non-void pixels is skipped.
        min_score: a (mask, class) pair scoring under it is left out, except a kept
            mask's best class.
        top_k: at most this many classes per mask (None: all).

    Returns:
        (steps, labels, scores), each (n,), ordered by step then class id: the step of
        each detection, its class in 1..C and its score p(class)·σ(stop).
    """
    t_steps, h, w = masks.shape
    valid = masks if ignore is None else masks & ~ignore.to(masks.device).bool()
    area = valid.flatten(1).sum(1)
    kept_step = (stop_prob >= stop_th) & (area >= min_area * h * w)          # (T,)
    scores = class_prob[:, 1:] * stop_prob[:, None]                           # (T, C)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(scores.shape[1], device=order.device)
                  .expand_as(order).contiguous())
    keep = (scores >= min_score) | (rank == 0)
    if top_k is not None:
        keep &= rank < top_k
    keep &= kept_step[:, None]
    steps, cls = keep.nonzero(as_tuple=True)
    return steps, cls + 1, scores[steps, cls]


def step_uncertainties(out: RSISOutput) -> dict[str, torch.Tensor]:
    """Per-step uncertainties of a batch (the keys of `basis.selection.UNCERTAINTIES`).

    The class head's end-of-sequence logit is left out and the softmax taken over the C
    object classes, so entropy is in [0, log C] and least confidence in [0, 1 − 1/C].
    Mask entropy is the binary entropy (nats) of σ(mask logit), in [0, log 2], averaged
    over the pixels of each step's mask.

    Args:
        out: the float32 network output, mask_logits (B, T, H, W), class_logits
            (B, T, C+1).

    Returns:
        name → (B, T) float32.
    """
    logp = torch.log_softmax(out.class_logits[..., 1:], -1)                  # (B, T, C)
    prob = logp.exp()
    x = out.mask_logits
    # H(σ(x)) = softplus(x) − x·σ(x), stable for large |x|
    mask_h = (F.softplus(x) - x * torch.sigmoid(x)).clamp(min=0).mean((-2, -1))
    return {"entropy": (-(prob * logp).sum(-1)).clamp(min=0),
            "least_confidence": 1.0 - prob.amax(-1), "mask_entropy": mask_h}


def image_uncertainties(per_step: dict[str, torch.Tensor], b: int, steps: Sequence[int]
                        ) -> dict[str, float]:
    """Image ``b``'s uncertainties: each `step_uncertainties` value averaged over the
    distinct steps it emits (``steps``); 0.0 for an image that emits none."""
    uniq = sorted({int(t) for t in steps})
    if not uniq:
        return {k: 0.0 for k in per_step}
    return {k: float(v[b, uniq].mean()) for k, v in per_step.items()}


@torch.no_grad()
def predict(model: RSIS, dataset: Dataset, batch_size: int = 16,
            device: str | torch.device = "cpu", loss_cfg: LossConfig = LossConfig(),
            with_iou_true: bool = True, num_workers: int = 0, amp: str = "none",
            channels_last: bool = False, *, inference: str | None = None,
            stop_th: float = RSIS_STOP_TH, min_area: float = RSIS_MIN_AREA,
            min_score: float = 0.0, top_k: int | None = None,
            with_features: bool = False) -> list[ImagePrediction]:
    """Predict every image of ``dataset`` in order.

    Args:
        model: a trained RSIS (W-RSIS when ``model.cfg.weak``).
        dataset: items are `basis.types.Sample`; W-RSIS reads their labels as the weak
            annotation, and their masks as ground truth for ``iou_true``.
        batch_size: images per forward pass.
        device: where to run.
        loss_cfg: its ``iou_target`` says how to read the IoU output.
        with_iou_true: fill ``iou_true`` from the ground-truth masks (False for data
            without masks).
        num_workers: DataLoader workers.
        amp: "none" (default), "bf16" or "fp16": autocast on CUDA; ignored elsewhere.
            Masks, scores and IoUs are computed from the float32 output.
        channels_last: on CUDA, convert the model (in place) and the images to
            channels_last memory format; ignored elsewhere.
        inference: plain RSIS's rule, "rsis" or "first_stop" (module docstring);
            None (default) takes ``model.cfg.inference``. Unused by W-RSIS.
        stop_th, min_area, min_score, top_k: the "rsis" rule's thresholds
            (`rsis_detections`); the defaults are RSIS's.
        with_features: also fill ``features``, the encoder's last feature map global-
            average pooled, (F,) per image (captured by a forward hook: no extra pass).

    Returns:
        One ImagePrediction per item, in dataset order, ``steps`` and ``extras`` (the
        image's uncertainties, `image_uncertainties`) filled. ``iou_pred``
        is in IoU space, one per detection (a mask's detections share it); ``iou_true``
        is per detection, from one same-class matching of all detections to the
        ground truth. `image_score_mae` of the result is the Table 2 metric.
    """
    rule = model.cfg.inference if inference is None else inference
    if rule not in INFERENCE_RULES:
        raise ValueError(f"inference={rule!r} not in {INFERENCE_RULES}")
    if not 0.0 <= min_area <= 1.0:
        raise ValueError(f"min_area must be in [0, 1], got {min_area}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                              or top_k < 1):
        raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")
    faithful = rule == "rsis" and not model.cfg.weak
    device = torch.device(device)
    amp_dtype(amp, device)  # validates amp on every device
    was_training = model.training
    model.to(device).eval()
    channels_last = channels_last and device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=collate)
    preds: list[ImagePrediction] = []
    pooled: list[torch.Tensor] = []
    hook = model.encoder.register_forward_hook(
        lambda _m, _i, maps: pooled.append(maps[-1].float().mean((2, 3)).cpu())
    ) if with_features else None
    try:
        for batch in loader:
            images = batch["images"].to(device)
            class_seq = weak_class_sequence(batch["labels"]).to(device) if model.cfg.weak else None
            out = forward_for_inference(model, images, class_seq, amp, channels_last)
            per_step = {k: v.cpu() for k, v in step_uncertainties(out).items()}
            feats = pooled.pop() if hook is not None else None                # (B, F)
            cls_prob = torch.softmax(out.class_logits, -1).cpu()
            stop_prob = torch.sigmoid(out.stop_logits).cpu()
            iou_pred = iou_target_inverse(out.iou, loss_cfg.iou_target).cpu()
            all_masks = (out.mask_logits > 0).cpu()
            h, w = images.shape[-2:]
            for b in range(images.shape[0]):
                if faithful:
                    steps, labels, scores = rsis_detections(
                        cls_prob[b], stop_prob[b], all_masks[b], batch["ignore"][b],
                        stop_th=stop_th, min_area=min_area, min_score=min_score,
                        top_k=top_k)
                else:
                    n, labels = emitted_objects(out, b, class_seq,
                                                int(batch["labels"][b].numel()))
                    labels = labels.cpu()
                    steps = torch.arange(n)
                    scores = cls_prob[b, steps, labels] * stop_prob[b, :n]
                # one RLE per mask, copied to each of its detections
                uniq = sorted(set(steps.tolist()))
                rle_of = dict(zip(uniq, encode_rles(all_masks[b, uniq])))
                pred = ImagePrediction(
                    image_id=int(batch["image_ids"][b]), height=int(h), width=int(w),
                    rles=[dict(rle_of[t]) for t in steps.tolist()],
                    labels=[int(x) for x in labels.tolist()],
                    scores=[float(x) for x in scores.tolist()],
                    iou_pred=[float(x) for x in iou_pred[b, steps].tolist()],
                    steps=[int(t) for t in steps.tolist()],
                    extras=image_uncertainties(per_step, b, steps.tolist()),
                    features=None if feats is None else [float(v) for v in feats[b].tolist()],
                )
                if with_iou_true:
                    pred.iou_true = [float(x) for x in match_true_iou(
                        all_masks[b, steps], labels, batch["masks"][b], batch["labels"][b],
                        batch["ignore"][b])]
                preds.append(pred)
    finally:
        if hook is not None:
            hook.remove()
        model.train(was_training)
    return preds
