"""The training loop of RSIS / W-RSIS / IoU-W-RSIS, with hooks and resumable state.

`train` is a thin wrapper over `Trainer` (detectron2's ``engine/train_loop.py`` style):
the trainer owns the model, data, optimiser and state, and runs one `Phase` per epoch,
calling the hooks' ``before_train`` / ``after_epoch`` / ``after_train`` (the last in a
``finally``, so it runs also when training raises).

One code path serves one process and DDP: when `torch.distributed` is initialised the
data is sharded with a `DistributedSampler` and the model wrapped in
`DistributedDataParallel`; at world size 1 both are no-ops. Epoch shuffling depends on
(seed, epoch) only, so a run resumed from `TrainState.state_dict()` continues exactly as
the uninterrupted run would have (bit-identical on CPU).

IoU schedule (paper section 5 / Table 2):
  * "freeze" (default): ``epochs`` epochs of mask + class + stop loss with the IoU
    branch off, then ``iou_epochs`` epochs that train only the IoU branch with every
    other weight frozen (and BatchNorm statistics fixed: the model runs in eval mode).
  * "joint" (the paper's "Baseline"): ``epochs`` epochs of all four terms at once;
    ``iou_epochs`` is not used.

The IoU-only phase. Everything but the branch's FC is frozen and in eval mode, so the
branch's input features and its targets are a fixed function of each image: they are
computed once (one no-grad pass, `iou_training_set`) and the FC is then trained on them,
``iou_passes`` passes per IoU epoch, at a cost of milliseconds. The steps, inputs and
targets are exactly those of inference (`basis.infer.predict`): W-RSIS gets the weak
labels ordered by class id, and the target of a step is the IoU of its binarised mask
with the same-class ground truth that `basis.metrics.iou.match_true_iou` pairs it with,
i.e. the quantity the image score is later compared to. ``iou_holdout`` > 0 keeps that
fraction of the training images out of the segmentation epochs and fits the branch on
them only, so its targets are IoUs on images the segmenter never saw (see TrainConfig).

Training to convergence (RSIS's recipe, all off by default): ``steps`` sets the
segmentation length as a step budget instead of epochs; ``val_fraction`` holds out
images for a validation loss after every segmentation epoch, ``patience`` stops after
that many epochs without improvement, and the best epoch's weights are restored when
segmentation ends; ``class_loss_from_epoch`` / ``stop_loss_from_epoch`` add the class /
stop term only from that epoch on (RSIS adds the class loss after 20 epochs).
"""
from __future__ import annotations

import enum
import logging
import math
import random
import time
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from basis.data.synthetic import collate
from basis.infer import (
    AMP_MODES,
    amp_dtype,
    autocast,
    emitted_objects,
    float_output,
    forward_for_inference,
    weak_class_sequence,
)
from basis.losses import CLASS_ORDERS, LossConfig, class_sequence, iou_target_transform, rsis_loss
from basis.metrics.iou import match_true_iou
from basis.models.rsis import RSIS, RSISOutput

log = logging.getLogger(__name__)

SEG_PARTS = ("mask", "class", "stop")
ALL_PARTS = ("mask", "class", "stop", "iou")
LR_SCHEDULES = ("constant", "cosine", "poly")
GROUPS = ("encoder", "decoder", "iou")
# The validation images are drawn from a stream of their own, so that they do not
# coincide with the IoU holdout's draw (`holdout_split` of the same seed).
VAL_SEED_OFFSET = 104_729


class Phase(enum.StrEnum):
    """What an epoch trains. The values are the strings earlier code used, and a
    `Phase` compares equal to (and serialises as) its value."""

    SEGMENT = "segment"  #: mask + class + stop, the IoU branch frozen ("freeze")
    IOU = "iou"          #: the IoU branch alone on cached features ("freeze")
    JOINT = "joint"      #: every term at once ("joint")


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
        epochs: epochs of segmentation training (replaced by one derived from
            ``steps`` when that is set).
        batch_size: images per step and process.
        lr_decoder: Adam learning rate of the decoder and heads (RSIS: 1e-3).
        lr_encoder: Adam learning rate of the encoder. RSIS uses 1e-6 on an ImageNet
            pretrained ResNet; here the encoder starts from random weights (none can be
            downloaded), which needs the decoder's rate. With ``encoder_weights`` set,
            use 1e-6 as in the paper.
        lr_iou: Adam learning rate of the IoU branch (one linear layer). The paper gives
            none; it trains the branch for ~100 epochs, and a short IoU-only phase on a
            small set needs a larger rate than the decoder's to move at all.
        iou_schedule: "freeze" or "joint" (see the module docstring).
        iou_epochs: extra epochs that train only the IoU branch ("freeze" only).
        seed: seeds the initial RNG state, the epoch shuffles and the held-out draws.
        num_workers: DataLoader workers.
        grad_clip: max global gradient norm, None for no clipping.
        iou_passes: passes over the cached IoU training set per IoU epoch ("freeze"
            only). A pass is one step per ``batch_size`` images and costs about a
            millisecond, but a linear layer on a few hundred objects needs a few hundred
            Adam steps, far more than the paper's 100 epochs of a 1464-image set give
            here; the passes give them without 100 per-epoch hooks and checkpoints.
        iou_holdout: fraction of the training images kept out of the segmentation
            epochs and used alone to fit the IoU branch ("freeze" only; 0 = all images
            serve both, as in the paper). The segmenter fits its training images far
            better than new ones, so IoU targets measured on them are optimistic;
            held-out images give honest targets at the price of fewer images to segment.
            Default 0.0 (the paper's setup): on synthetic 64 px data with N = 40 and
            100, 0.2 gave no consistent MAE gain and cost AP (fewer images to segment).
            Drawn from the images left after ``val_fraction``.
        class_order: the order of W-RSIS's class inputs in training: "class" (default;
            class id, then area — the only order inference can reproduce from IL+C
            labels) or "area" (RSIS's largest-first ground-truth order).
        lr_schedule: learning-rate factor per epoch, stepped after every epoch:
            "constant" (default, factor 1), "cosine" (½(1 + cos(π e / E))) or "poly"
            ((1 − e / E)^0.9). For the encoder and decoder groups e counts the
            segmentation epochs and E = ``epochs``; for the IoU group, under "freeze"
            it counts the IoU-only epochs with E = ``iou_epochs``, under "joint" the
            same as the others. Its state is part of `TrainState.state_dict()`.
        amp: mixed precision of the forward pass on CUDA: "none" (default), "bf16" or
            "fp16" (with a dynamic GradScaler, saved in the checkpoint). The loss is
            computed in float32. Ignored on other devices (training is fp32 there).
        channels_last: on CUDA, train (and keep) the model in channels_last memory
            format and feed it channels_last images. Ignored on other devices.
        freeze_bn: run every BatchNorm layer in eval mode during training (running
            statistics fixed; the affine weights still train). For small per-process
            batches, and what makes a DDP run equal to one process on the same global
            batch (per-rank batch statistics otherwise differ from the global ones).
        steps: a budget of segmentation steps (optimizer steps per process), or None
            (default: ``epochs`` counts). When set it replaces ``epochs`` by
            ``max(1, ceil(steps / b))``, the fewest whole epochs that take at least
            ``steps`` steps, where b = `batches_per_epoch` = ceil(ceil(n / W) / B) for
            n segmentation images (after ``val_fraction`` and ``iou_holdout``), world
            size W and ``batch_size`` B, one less when that leaves a last batch of a
            single image (it is dropped). The IoU-only epochs are not counted.
        patience: stop segmentation after this many epochs in a row without a lower
            validation loss (RSIS's early stopping), then restore the best epoch's
            weights; under "freeze" the IoU-only epochs follow. None (default) never
            stops early. Needs ``val_fraction`` > 0.
        val_fraction: fraction of the training images held out (a seeded draw,
            `holdout_split`) to compute a validation loss after every segmentation
            epoch; the weights of the epoch with the lowest one are restored when
            segmentation ends (with or without ``patience``). 0.0 (default): no
            validation, every image trains.
        class_loss_from_epoch: the class term joins the loss from this (0-based)
            segmentation epoch on; before it the class head does not train. 0
            (default): always. RSIS: 20.
        stop_loss_from_epoch: the same for the stop term (0: always).
    """

    epochs: int = 8
    batch_size: int = 8
    lr_decoder: float = 1e-3
    lr_encoder: float = 1e-3
    lr_iou: float = 1e-2
    iou_schedule: str = "freeze"
    iou_epochs: int = 3
    seed: int = 0
    num_workers: int = 0
    grad_clip: float | None = None
    iou_passes: int = 25
    iou_holdout: float = 0.0
    lr_schedule: str = "constant"
    amp: str = "none"
    channels_last: bool = False
    freeze_bn: bool = False
    class_order: str = "class"
    steps: int | None = None
    patience: int | None = None
    val_fraction: float = 0.0
    class_loss_from_epoch: int = 0
    stop_loss_from_epoch: int = 0

    def __post_init__(self) -> None:
        if self.class_order not in CLASS_ORDERS:
            raise ValueError(f"class_order={self.class_order!r} not in {CLASS_ORDERS}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule={self.lr_schedule!r} not in {LR_SCHEDULES}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp={self.amp!r} not in {AMP_MODES}")
        if self.iou_schedule not in ("freeze", "joint"):
            raise ValueError(f"iou_schedule={self.iou_schedule!r} not in ('freeze', 'joint')")
        if not 0.0 <= self.iou_holdout < 1.0:
            raise ValueError(f"iou_holdout={self.iou_holdout} must be in [0, 1)")
        if self.iou_passes < 1:
            raise ValueError(f"iou_passes={self.iou_passes} must be >= 1")
        if self.steps is not None and (not _is_int(self.steps) or self.steps < 1):
            raise ValueError(f"steps={self.steps!r} must be None or an int >= 1")
        if self.patience is not None and (not _is_int(self.patience) or self.patience < 1):
            raise ValueError(f"patience={self.patience!r} must be None or an int >= 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction={self.val_fraction} must be in [0, 1)")
        if self.patience is not None and self.val_fraction == 0.0:
            raise ValueError(f"patience={self.patience} needs a validation split: "
                             "set val_fraction > 0")
        for name in ("class_loss_from_epoch", "stop_loss_from_epoch"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ValueError(f"{name}={value!r} must be an int >= 0")

    @property
    def total_epochs(self) -> int:
        """Segmentation plus IoU-only epochs, counting ``epochs`` as given (a ``steps``
        budget is resolved by `Trainer`, which knows the data)."""
        return self.epochs + (self.iou_epochs if self.iou_schedule == "freeze" else 0)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass
class TrainState:
    """Everything a training run is, between two epochs.

    Attributes:
        model: the (unwrapped) network.
        optimizer: Adam over the named parameter groups of `make_optimizer`.
        epoch: epochs completed (an early stop skips the rest of the segmentation
            epochs: it jumps to ``epochs``).
        history: the metrics dict of every completed epoch.
        scheduler: the per-epoch learning-rate scheduler (`make_scheduler`), or None.
        scaler: the fp16 GradScaler, or None when not training in fp16 on CUDA.
        best_epoch: with validation (``val_fraction`` > 0), the 1-based epoch with the
            lowest validation loss so far (the one restored at the end), else None.
        best_loss: that epoch's validation loss.
        bad_epochs: validated epochs since then (early stopping's counter).
        best_model: that epoch's weights (a CPU ``state_dict``), held on rank 0 only.
        stopped_epoch: the 1-based epoch after which patience ran out, or None.
    """

    model: RSIS
    optimizer: torch.optim.Optimizer
    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    scaler: torch.amp.GradScaler | None = None
    best_epoch: int | None = None
    best_loss: float | None = None
    bad_epochs: int = 0
    best_model: dict[str, torch.Tensor] | None = None
    stopped_epoch: int | None = None

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer, scheduler, GradScaler, epoch, history, the RNG states
        (torch, CUDA, numpy, python) and, with validation, the early-stopping state
        under ``"best"`` (None without: the other keys are those of every earlier
        version, so old checkpoints load and new ones load in old code)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch,
            "history": [dict(h) for h in self.history],
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
            "best": None if self.best_epoch is None and self.stopped_epoch is None else {
                "epoch": self.best_epoch,
                "loss": self.best_loss,
                "bad_epochs": self.bad_epochs,
                "model": self.best_model,
                "stopped_epoch": self.stopped_epoch,
            },
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.model.load_state_dict(sd["model"])
        self.optimizer.load_state_dict(sd["optimizer"])
        # Checkpoints from before the scheduler existed have none: constant rates.
        if self.scheduler is not None and sd.get("scheduler") is not None:
            self.scheduler.load_state_dict(sd["scheduler"])
        if self.scaler is not None and sd.get("scaler") is not None:
            self.scaler.load_state_dict(sd["scaler"])
        self.epoch = int(sd["epoch"])
        self.history = [dict(h) for h in sd["history"]]
        best = sd.get("best") or {}  # absent before early stopping existed
        self.best_epoch = best.get("epoch")
        self.best_loss = best.get("loss")
        self.bad_epochs = int(best.get("bad_epochs", 0))
        self.best_model = best.get("model")
        self.stopped_epoch = best.get("stopped_epoch")
        rng = sd.get("rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            np.random.set_state(rng["numpy"])
            random.setstate(rng["python"])


class Hook:
    """Callbacks of the training loop; subclass and override what you need (any object
    with these three methods will do).

    Hooks run on every rank; a hook with side effects (files, tracking) should act on
    rank 0 only. ``after_train`` runs also when training raises (then before the error
    propagates).
    """

    def before_train(self, state: TrainState) -> None:
        pass

    def after_epoch(self, state: TrainState, metrics: dict[str, float]) -> None:
        pass

    def after_train(self, state: TrainState) -> None:
        pass


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def make_optimizer(model: RSIS, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam with three parameter groups named (``group["name"]``) "encoder", "decoder"
    (with the class and stop heads) and "iou" (the IoU branch; empty without one)."""
    enc = set(id(p) for p in model.encoder_parameters())
    iou = set(id(p) for p in model.iou_parameters())
    rest = [p for p in model.parameters() if id(p) not in enc and id(p) not in iou]
    groups = [
        {"params": model.encoder_parameters(), "lr": cfg.lr_encoder, "name": "encoder"},
        {"params": rest, "lr": cfg.lr_decoder, "name": "decoder"},
        {"params": model.iou_parameters(), "lr": cfg.lr_iou, "name": "iou"},
    ]
    # The fused kernel is ~8× faster than the default per-tensor loop on CPU (10 vs
    # 80 ms a step for ResNet-18, a quarter of a 64 px training step).
    devices = {p.device.type for p in model.parameters()}
    fused = devices <= {"cpu", "cuda"} and all(p.dtype.is_floating_point
                                               for p in model.parameters())
    return torch.optim.Adam(groups, fused=fused or None)


def group_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The current learning rate of each named parameter group."""
    return {g["name"]: float(g["lr"]) for g in optimizer.param_groups}


def _lr_factor(kind: str, e: int, n: int) -> float:
    """Factor of the base learning rate in epoch ``e`` (0-based) of ``n``."""
    if kind == "constant" or n <= 0:
        return 1.0
    frac = min(max(e, 0), n) / n
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * frac))
    return (1.0 - frac) ** 0.9  # "poly", as in DeepLab


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig
                   ) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-epoch LambdaLR over the named groups of `make_optimizer` (see
    ``TrainConfig.lr_schedule``); step it once after every epoch."""
    kind, seg = cfg.lr_schedule, cfg.epochs

    def seg_factor(e: int) -> float:
        return _lr_factor(kind, e, seg)

    def iou_factor(e: int) -> float:
        if cfg.iou_schedule == "freeze":
            return _lr_factor(kind, e - seg, cfg.iou_epochs)
        return _lr_factor(kind, e, seg)

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, [iou_factor if g.get("name") == "iou" else seg_factor
                    for g in optimizer.param_groups])


def _freeze_bn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def total_epochs(cfg: TrainConfig, model: RSIS) -> int:
    """Epochs of the whole run: no IoU-only phase for a model without an IoU branch."""
    return cfg.total_epochs if model.cfg.iou_head else cfg.epochs


def phase_of(cfg: TrainConfig, epoch: int) -> Phase:
    """The phase of 0-based ``epoch``."""
    if cfg.iou_schedule == "joint":
        return Phase.JOINT
    return Phase.SEGMENT if epoch < cfg.epochs else Phase.IOU


def _set_trainable(model: RSIS, phase: Phase) -> tuple[str, ...]:
    """Set requires_grad for the phase and return the loss terms it trains."""
    iou_ids = set(id(p) for p in model.iou_parameters())
    for p in model.parameters():
        is_iou = id(p) in iou_ids
        p.requires_grad_(phase == Phase.JOINT or (phase == Phase.SEGMENT) != is_iou)
    if phase == Phase.IOU:
        model.eval()  # frozen means frozen: BatchNorm statistics too
        return ("iou",)
    model.train()
    if phase == Phase.SEGMENT or not model.cfg.iou_head:
        return SEG_PARTS
    return ALL_PARTS


def scheduled_parts(cfg: TrainConfig, parts: Sequence[str], epoch: int) -> tuple[str, ...]:
    """The terms of ``parts`` that the loss schedule lets into 0-based ``epoch``
    (``class_loss_from_epoch``, ``stop_loss_from_epoch``)."""
    start = {"class": cfg.class_loss_from_epoch, "stop": cfg.stop_loss_from_epoch}
    return tuple(p for p in parts if epoch >= start.get(p, 0))


def _head_parameters(model: RSIS, term: str) -> list[nn.Parameter]:
    """The head that only ``term`` of the loss trains ("class" or "stop")."""
    return list({"class": model.fc_class, "stop": model.fc_stop}[term].parameters())


def batches_per_epoch(n_images: int, batch_size: int, world: int = 1) -> int:
    """Optimizer steps per segmentation epoch and process: ceil(ceil(n / W) / B) for
    n images, W processes and batch size B, one less when that would leave a last
    batch of a single image (it is dropped, see `Trainer`)."""
    per_rank = math.ceil(n_images / world)
    if per_rank == 0:
        return 0
    drop = per_rank % batch_size == 1 and per_rank > 1
    return per_rank // batch_size if drop else math.ceil(per_rank / batch_size)


def epochs_for_steps(steps: int, n_images: int, batch_size: int, world: int = 1) -> int:
    """Epochs of a ``steps`` budget: max(1, ceil(steps / `batches_per_epoch`)), the
    fewest whole epochs that take at least ``steps`` steps (at least one)."""
    per_epoch = batches_per_epoch(n_images, batch_size, world)
    return max(1, math.ceil(steps / max(per_epoch, 1)))


def holdout_split(n: int, frac: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of the segmentation images and of the IoU-branch images.

    Also the draw of the validation images (`Trainer`, with the seed offset by
    ``VAL_SEED_OFFSET``).

    Args:
        n: images in the training set.
        frac: fraction held out for the IoU branch; 0 gives every image to both.
        seed: the draw depends on it only (not on the epoch shuffles).

    Returns:
        (segment, iou) sorted index lists; disjoint when ``frac`` > 0, each non-empty
        when n ≥ 2.
    """
    if frac <= 0.0 or n < 2:
        return list(range(n)), list(range(n))
    k = min(max(1, round(frac * n)), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919)).tolist()
    return sorted(perm[k:]), sorted(perm[:k])


@torch.no_grad()
def iou_training_set(model: RSIS, dataset: Dataset, batch_size: int = 16,
                     device: str | torch.device = "cpu", amp: str = "none",
                     channels_last: bool = False
                     ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The IoU branch's inputs and targets, per image, as inference sees them.

    The model runs in eval mode with the inference protocol (`basis.infer.predict`): a
    W-RSIS gets the weak labels ordered by class id; the objects are the steps that
    inference reports, and the target of each is the IoU of its binarised mask with
    its matched same-class ground truth (`match_true_iou`), 0.0 when unmatched.

    Args:
        model: an RSIS with an IoU branch.
        dataset: items are `basis.types.Sample` with ground truth.
        batch_size: images per forward pass.
        device: where the model is.
        amp, channels_last: as in `basis.infer.predict` (CUDA only).

    Returns:
        One (features (n, F) float32, true IoU (n,) float32) pair per image, on the CPU,
        in dataset order.
    """
    was_training = model.training
    model.eval()
    items: list[tuple[torch.Tensor, torch.Tensor]] = []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    try:
        for batch in loader:
            images = batch["images"].to(device)
            class_seq = (weak_class_sequence(batch["labels"]).to(device)
                         if model.cfg.weak else None)
            out = forward_for_inference(model, images, class_seq, amp, channels_last)
            assert out.iou_features is not None, "model has no IoU branch"
            for b in range(images.shape[0]):
                n, labels = emitted_objects(out, b, class_seq, int(batch["labels"][b].numel()))
                masks = (out.mask_logits[b, :n] > 0).cpu()
                iou = match_true_iou(masks, labels.cpu(), batch["masks"][b],
                                     batch["labels"][b], batch["ignore"][b])
                items.append((out.iou_features[b, :n].float().cpu(),
                              torch.tensor(iou, dtype=torch.float32)))
    finally:
        model.train(was_training)
    return items


def _sync_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every rank. DDP does this at the
    start of each forward, so after the last training step the ranks' statistics
    differ by that step's update until the next DDP forward; the IoU phase, validation
    and the caller see the model outside DDP."""
    if _world()[0] > 1:
        for buf in model.buffers():
            dist.broadcast(buf, 0)


def _broadcast_model(model: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (no-op at world size 1)."""
    if _world()[0] > 1:
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(t.data, 0)


def _average(sums: dict[str, float], count: int) -> dict[str, float]:
    """Per-batch mean of each metric, averaged over ranks (weighted by batch count)."""
    keys = sorted(sums)
    device = "cpu"
    if _world()[0] > 1 and dist.get_backend() == "nccl":
        device = f"cuda:{torch.cuda.current_device()}"
    vec = torch.tensor([sums[k] for k in keys] + [float(count)], dtype=torch.float64,
                       device=device)
    if _world()[0] > 1:
        dist.all_reduce(vec)
    n = max(vec[-1].item(), 1.0)
    return {k: vec[i].item() / n for i, k in enumerate(keys)}


def segmentation_loss(out: RSISOutput, batch: dict, class_seq: torch.Tensor | None,
                      loss_cfg: LossConfig, parts: Sequence[str]
                      ) -> tuple[torch.Tensor, dict[str, float]]:
    """`rsis_loss` with the class sequence given as an argument.

    Args:
        out: the network output for ``batch``, T steps (float32).
        batch: `basis.data.collate` output (``masks``, ``labels``, ``ignore`` are read);
            not modified.
        class_seq: (B, T) long, W-RSIS's input classes (0 = no step), or None for
            plain RSIS.
        loss_cfg: weights and IoU target.
        parts: the terms to include.

    Returns:
        (total loss, scalar dict), as `rsis_loss`.
    """
    # rsis_loss reads the sequence from the batch: hand it a shallow view with it, so
    # the caller's batch is never changed.
    view = {k: v for k, v in batch.items() if k != "class_seq"}
    if class_seq is not None:
        view["class_seq"] = class_seq
    return rsis_loss(out, view, loss_cfg, parts)


def _term_weights(loss_cfg: LossConfig) -> dict[str, float]:
    return {"mask": loss_cfg.w_mask, "class": loss_cfg.w_class, "stop": loss_cfg.w_stop,
            "iou": loss_cfg.w_iou}


class Trainer:
    """One training run: the model, its data, optimiser, state and hooks.

    Built once per run; `train` runs the epochs that are left. At world size > 1
    (`torch.distributed` initialised) every rank builds its own trainer with the same
    arguments.

    Attributes:
        model: the network, on ``device``.
        cfg: the configuration, with ``epochs`` resolved from ``steps`` when set.
        loss_cfg: loss weights and IoU target.
        hooks: the callbacks, called in order.
        device: where the model trains.
        state: the `TrainState` (resumed when a state dict was given).
        seg_set, iou_set, val_set: the images of the segmentation epochs, of the IoU
            branch and of validation (None without ``val_fraction``).
        loader: the segmentation DataLoader (this rank's shard).
        n_epochs: epochs of the whole run (segmentation, then any IoU-only epochs).
        world, rank: the process group (1, 0 without DDP).
    """

    def __init__(self, model: RSIS, dataset: Dataset, cfg: TrainConfig,
                 loss_cfg: LossConfig = LossConfig(), hooks: Sequence[Hook] = (),
                 device: str | torch.device = "cpu", state: dict[str, Any] | None = None,
                 progress: bool = False) -> None:
        """See `train` for the arguments."""
        self.world, self.rank = _world()
        self.device = torch.device(device)
        if state is None:
            torch.manual_seed(cfg.seed)
            np.random.seed(cfg.seed)
            random.seed(cfg.seed)
        self.model = model.to(self.device)
        self.channels_last = cfg.channels_last and self.device.type == "cuda"
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.loss_cfg, self.hooks, self.progress = loss_cfg, list(hooks), progress
        self.amp_dtype = amp_dtype(cfg.amp, self.device)

        self._split(dataset, cfg)
        self.sampler: DistributedSampler = DistributedSampler(
            self.seg_set, num_replicas=self.world, rank=self.rank, shuffle=True,
            seed=cfg.seed, drop_last=False)
        # A last batch of one image breaks BatchNorm in training (1×1 maps in layer4 at
        # small sizes), so only such a batch is dropped; it holds a different image each
        # epoch.
        self.loader = DataLoader(
            self.seg_set, batch_size=cfg.batch_size, sampler=self.sampler,
            num_workers=cfg.num_workers, collate_fn=collate,
            drop_last=len(self.sampler) % cfg.batch_size == 1 and len(self.sampler) > 1)
        if cfg.steps is not None:
            cfg = replace(cfg, epochs=epochs_for_steps(
                cfg.steps, len(self.seg_set), cfg.batch_size, self.world))  # type: ignore[arg-type]
        self.cfg = cfg
        self.n_epochs = total_epochs(cfg, model)

        optimizer = make_optimizer(model, cfg)
        scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.state = TrainState(model=model, optimizer=optimizer,
                                scheduler=make_scheduler(optimizer, cfg), scaler=scaler)
        if state is not None:
            self.state.load_state_dict(state)
            if self.rank != 0:
                self.state.best_model = None  # rank 0 keeps (and broadcasts) the best

        self._wrapped: nn.Module = model
        self._wrapped_for: tuple[Phase, tuple[str, ...]] | None = None
        self._iou_cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    # -- data --------------------------------------------------------------------------
    def _split(self, dataset: Dataset, cfg: TrainConfig) -> None:
        """Validation images first (their own draw), then the IoU holdout of the rest."""
        n = len(dataset)  # type: ignore[arg-type]
        self.val_set: Dataset | None = None
        fit: Dataset = dataset
        if cfg.val_fraction > 0.0:
            if n < 2:
                raise ValueError(f"val_fraction={cfg.val_fraction} needs at least 2 "
                                 f"training images, got {n}")
            fit_idx, val_idx = holdout_split(n, cfg.val_fraction, cfg.seed + VAL_SEED_OFFSET)
            fit, self.val_set = Subset(dataset, fit_idx), Subset(dataset, val_idx)
        holdout = (cfg.iou_holdout if cfg.iou_schedule == "freeze" and self.model.cfg.iou_head
                   else 0.0)
        seg_idx, iou_idx = holdout_split(len(fit), holdout, cfg.seed)  # type: ignore[arg-type]
        self.seg_set: Dataset = fit if holdout == 0.0 else Subset(fit, seg_idx)
        self.iou_set: Dataset = fit if holdout == 0.0 else Subset(fit, iou_idx)

    def _shard(self, dataset: Dataset) -> Dataset:
        """This rank's part of ``dataset`` in order (padded to equal sizes, so every
        rank takes the same number of steps)."""
        return Subset(dataset, list(DistributedSampler(
            dataset, num_replicas=self.world, rank=self.rank, shuffle=False)))

    def _inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A batch's network inputs on the device.

        Returns:
            images (B, 3, H, W) float32 (channels_last on CUDA when configured) and, for
            W-RSIS, the class sequence (B, T) long in ``cfg.class_order`` with
            T = max(1, most instances in an image); None for plain RSIS.
        """
        images = batch["images"].to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        class_seq = None
        if self.model.cfg.weak:
            steps = max(1, max(int(lab.numel()) for lab in batch["labels"]))
            class_seq = class_sequence(batch["labels"], batch["masks"], steps,
                                       self.cfg.class_order).to(self.device)
        return images, class_seq

    # -- the loop ----------------------------------------------------------------------
    def train(self) -> TrainState:
        """Run the epochs that are left; the hooks' ``after_train`` runs in any case.

        Returns:
            The final state (see `train`).
        """
        ts = self.state
        try:
            for h in self.hooks:
                h.before_train(ts)
            while ts.epoch < self.n_epochs:
                metrics = self.run_epoch()
                for h in self.hooks:
                    h.after_epoch(ts, metrics)
            _sync_buffers(self.model)  # a collective: not on the way out of an error
        finally:
            self.model.train()
            for p in self.model.parameters():
                p.requires_grad_(True)
            for h in self.hooks:
                h.after_train(ts)
        return ts

    def run_epoch(self) -> dict[str, float]:
        """Train epoch ``state.epoch`` (0-based) in its phase, step the scheduler,
        validate (segmentation epochs, with ``val_fraction``) and record the metrics.

        Returns:
            The epoch's metrics (also appended to ``state.history``).
        """
        ts, cfg = self.state, self.cfg
        phase = phase_of(cfg, ts.epoch)
        parts = self._enter(phase)
        if phase is Phase.IOU:
            if self._iou_cache is None:
                _sync_buffers(self.model)
                # Each rank fits on its shard; gradients are all-reduced.
                self._iou_cache = iou_training_set(
                    self.model, self._shard(self.iou_set), cfg.batch_size, self.device,
                    amp=cfg.amp, channels_last=self.channels_last)
            metrics = self._run_iou_epoch()
        else:
            self.sampler.set_epoch(ts.epoch)
            metrics = self._run_epoch(parts)
        metrics["phase_iou"] = float(phase is Phase.IOU)
        if ts.scheduler is not None:
            ts.scheduler.step()
        ts.epoch += 1
        if self.val_set is not None and phase is not Phase.IOU:
            metrics.update(self._validate_and_track(phase, parts))
        ts.history.append(metrics)
        log.info("epoch %d/%d %s", ts.epoch, self.n_epochs,
                 " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        return metrics

    def _enter(self, phase: Phase) -> tuple[str, ...]:
        """Make the model trainable for ``phase`` at the current epoch and return the
        loss terms it trains (after the loss schedule)."""
        model, cfg = self.model, self.cfg
        parts = _set_trainable(model, phase)
        if phase is not Phase.IOU:
            parts = scheduled_parts(cfg, parts, self.state.epoch)
            # A head whose term is not in the loss yet gets no gradient; it is frozen,
            # so that DDP (which expects a gradient for every trainable parameter)
            # and the optimizer leave it alone.
            for term in ("class", "stop"):
                if term not in parts:
                    for p in _head_parameters(model, term):
                        p.requires_grad_(False)
        if cfg.freeze_bn:
            _freeze_bn(model)
        if phase is not Phase.IOU and self._wrapped_for != (phase, parts):
            # DDP registers the parameters that require grad when it is built, so the
            # wrapper is rebuilt whenever the set of trainable parameters changes.
            self._wrapped = (DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
                if self.world > 1 else model)
            self._wrapped_for = (phase, parts)
        return parts

    def _run_epoch(self, parts: tuple[str, ...]) -> dict[str, float]:
        """One segmentation (or joint) epoch over this rank's shard.

        Args:
            parts: the loss terms to train.

        Returns:
            The rank-averaged per-batch means of the loss and its terms, plus
            `_epoch_metrics`.
        """
        cfg, model = self.cfg, self.model
        optimizer, scaler = self.state.optimizer, self.state.scaler
        sums: dict[str, float] = {}
        n_batches = 0
        n_images = 0
        t0 = time.perf_counter()
        it: Iterable[dict] = self.loader
        if self.progress and self.rank == 0:
            from torch.hub import tqdm  # tqdm when installed, a plain fallback otherwise

            it = tqdm(self.loader, desc=f"epoch {self.state.epoch + 1}", leave=False)
        trainable = [p for p in model.parameters() if p.requires_grad]
        for batch in it:
            images, class_seq = self._inputs(batch)
            with autocast(self.device, self.amp_dtype):
                out = self._wrapped(images, class_seq)
            loss, logs = segmentation_loss(float_output(out), batch, class_seq,
                                           self.loss_cfg, parts)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                if cfg.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
                optimizer.step()
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            n_batches += 1
            n_images += int(images.shape[0])
        return _epoch_metrics(_average(sums, n_batches), optimizer, self.state.epoch,
                              n_images, time.perf_counter() - t0)

    def _run_iou_epoch(self) -> dict[str, float]:
        """One IoU-only epoch on the cached features: ``cfg.iou_passes`` shuffled
        passes, one L1 step per ``cfg.batch_size`` images (mean over their objects)."""
        cfg, model, optimizer = self.cfg, self.model, self.state.optimizer
        cache = self._iou_cache
        assert cache is not None
        epoch = self.state.epoch
        params = model.iou_parameters()
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        sums = {"iou": 0.0, "loss": 0.0}
        n_batches = 0
        t0 = time.perf_counter()
        for _ in range(cfg.iou_passes):
            order = torch.randperm(len(cache), generator=gen).tolist()
            for i in range(0, len(order), cfg.batch_size):
                chunk = [cache[j] for j in order[i:i + cfg.batch_size]]
                feats = torch.cat([c[0] for c in chunk]).to(self.device)    # (n, F)
                target = iou_target_transform(torch.cat([c[1] for c in chunk]).to(self.device),
                                              self.loss_cfg.iou_target)  # (n,)
                pred = model.iou_from_features(feats)
                l1 = F.l1_loss(pred, target) if target.numel() else pred.sum() * 0.0
                loss = self.loss_cfg.w_iou * l1
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.world > 1:
                    for p in params:
                        assert p.grad is not None
                        dist.all_reduce(p.grad)
                        p.grad.div_(self.world)
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                sums["iou"] += float(l1.detach())
                sums["loss"] += float(loss.detach())
                n_batches += 1
        return _epoch_metrics(_average(sums, n_batches), optimizer, epoch,
                              len(cache) * cfg.iou_passes, time.perf_counter() - t0)

    # -- validation and early stopping -------------------------------------------------
    @torch.no_grad()
    def validate(self, parts: Sequence[str]) -> dict[str, float]:
        """The loss terms ``parts`` on the validation images, model in eval mode.

        Returns:
            ``val_<term>`` per term and ``val_loss`` (their weighted sum, as
            `rsis_loss` adds them): rank-averaged per-batch means. The model is left in
            eval mode (the next epoch sets its mode).
        """
        assert self.val_set is not None
        _sync_buffers(self.model)  # every rank validates rank 0's statistics
        self.model.eval()
        loader = DataLoader(self._shard(self.val_set), batch_size=self.cfg.batch_size,
                            shuffle=False, num_workers=self.cfg.num_workers,
                            collate_fn=collate)
        sums: dict[str, float] = {}
        n_batches = 0
        for batch in loader:
            images, class_seq = self._inputs(batch)
            with autocast(self.device, self.amp_dtype):
                out = self.model(images, class_seq)
            _, logs = segmentation_loss(float_output(out), batch, class_seq, self.loss_cfg,
                                        parts)
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            n_batches += 1
        return {f"val_{k}": v for k, v in _average(sums, n_batches).items()}

    def _validate_and_track(self, phase: Phase, parts: tuple[str, ...]) -> dict[str, float]:
        """Validate the epoch just trained, update the best epoch and, when patience
        runs out or segmentation is over, restore the best weights (and skip to the
        end of segmentation).

        The criterion is the loss the epoch trained (its scheduled terms). When the
        schedule adds a term the losses before and after are not comparable, so the
        best epoch is searched afresh from there.

        Returns:
            The ``val_*`` metrics, ``best_epoch`` (1-based; 0.0 when none is finite
            yet) and ``stopped_early`` (1.0 in the epoch after which training stopped).
        """
        ts, cfg = self.state, self.cfg
        epoch = ts.epoch  # 1-based number of the epoch just trained
        all_parts = SEG_PARTS if phase is Phase.SEGMENT or not self.model.cfg.iou_head \
            else ALL_PARTS
        metrics = self.validate(all_parts)
        weights = _term_weights(self.loss_cfg)
        val = sum(weights[k] * metrics[f"val_{k}"] for k in parts)
        metrics["val_loss"] = val
        if epoch >= 2 and scheduled_parts(cfg, all_parts, epoch - 2) != parts:
            ts.best_epoch, ts.best_loss, ts.bad_epochs, ts.best_model = None, None, 0, None
        if math.isfinite(val) and (ts.best_loss is None or val < ts.best_loss):
            ts.best_epoch, ts.best_loss, ts.bad_epochs = epoch, val, 0
            if self.rank == 0:
                ts.best_model = {k: v.detach().to("cpu", copy=True)
                                 for k, v in self.model.state_dict().items()}
        else:
            ts.bad_epochs += 1
        stop = cfg.patience is not None and ts.bad_epochs >= cfg.patience
        if stop and epoch < cfg.epochs:
            ts.stopped_epoch = epoch
            log.info("early stop after epoch %d: no lower validation loss for %d epochs "
                     "(best: epoch %s)", epoch, ts.bad_epochs, ts.best_epoch)
            # The skipped epochs still advance the scheduler: a following IoU phase
            # starts on its own clock, as after a full segmentation.
            if ts.scheduler is not None:
                for _ in range(cfg.epochs - epoch):
                    ts.scheduler.step()
            ts.epoch = cfg.epochs
        if ts.epoch >= cfg.epochs:
            self._restore_best(epoch)
        metrics["best_epoch"] = float(ts.best_epoch or 0)
        metrics["stopped_early"] = float(ts.stopped_epoch == epoch)
        return metrics

    def _restore_best(self, trained: int) -> None:
        """Load the best epoch's weights (held on rank 0) into every rank's model, unless
        the epoch just ``trained`` (1-based) is the best."""
        ts = self.state
        if ts.best_epoch is None or ts.best_epoch == trained:
            return  # no finite validation loss yet, or the weights are the best
        if self.rank == 0:
            assert ts.best_model is not None, "best epoch without its weights"
            self.model.load_state_dict(ts.best_model)
        _broadcast_model(self.model)
        log.info("restored the weights of epoch %d (validation loss %.4g)",
                 ts.best_epoch, ts.best_loss)


def train(model: RSIS, dataset: Dataset, cfg: TrainConfig, loss_cfg: LossConfig = LossConfig(),
          hooks: Sequence[Hook] = (), device: str | torch.device = "cpu",
          state: dict[str, Any] | None = None, progress: bool = False) -> TrainState:
    """Train ``model`` on ``dataset`` for ``cfg.total_epochs`` epochs, or what is left.

    A thin wrapper: ``Trainer(...).train()``.

    Args:
        model: the network (moved to ``device``; trained in place).
        dataset: items are `basis.types.Sample`.
        cfg: schedule and optimiser settings (a model without an IoU branch skips the
            IoU-only epochs).
        loss_cfg: loss weights and IoU target.
        hooks: callbacks, called in order.
        device: where to train.
        state: a `TrainState.state_dict()` to resume from (also one written by earlier
            versions); None starts fresh and seeds torch, numpy and python from
            ``cfg.seed``. The weights are the caller's: build the model with
            ``RSIS(model_cfg, seed=...)`` for a reproducible run.
        progress: show a progress bar (rank 0 only).

    Returns:
        The final TrainState (``history`` holds one metrics dict per epoch with keys
        ``epoch``, ``phase_iou`` (1.0 in the IoU-only phase), ``loss`` and each term
        trained, ``lr_encoder``, ``lr_decoder``, ``lr_iou``, ``images``, ``seconds``,
        ``img_per_s``; with ``val_fraction`` the segmentation epochs add ``val_loss``,
        ``val_<term>``, ``best_epoch`` and ``stopped_early``, and ``best_epoch`` of the
        state is the epoch whose weights the model holds).
    """
    return Trainer(model, dataset, cfg, loss_cfg, hooks=hooks, device=device, state=state,
                   progress=progress).train()


def _epoch_metrics(metrics: dict[str, float], optimizer: torch.optim.Optimizer, epoch: int,
                   n_images: int, secs: float) -> dict[str, float]:
    """An epoch's averaged losses plus its learning rates, size and speed."""
    lrs = group_lrs(optimizer)
    metrics.update({
        "epoch": float(epoch + 1),
        "lr_encoder": lrs["encoder"],
        "lr_decoder": lrs["decoder"],
        "lr_iou": lrs["iou"],
        "images": float(n_images),
        "seconds": secs,
        "img_per_s": n_images / max(secs, 1e-9),
    })
    return metrics
