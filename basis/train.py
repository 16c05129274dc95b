"""The training loop of RSIS / W-RSIS / IoU-W-RSIS, with hooks and resumable state.

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
"""
from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
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
from basis.models.rsis import RSIS

log = logging.getLogger(__name__)

SEG_PARTS = ("mask", "class", "stop")
ALL_PARTS = ("mask", "class", "stop", "iou")
LR_SCHEDULES = ("constant", "cosine", "poly")


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
        epochs: epochs of segmentation training.
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
        seed: seeds the initial RNG state and the epoch shuffles.
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

    @property
    def total_epochs(self) -> int:
        return self.epochs + (self.iou_epochs if self.iou_schedule == "freeze" else 0)


@dataclass
class TrainState:
    """Everything a training run is, between two epochs.

    Attributes:
        model: the (unwrapped) network.
        optimizer: Adam over encoder and decoder parameter groups.
        epoch: epochs completed.
        history: the metrics dict of every completed epoch.
        scheduler: the per-epoch learning-rate scheduler (`make_scheduler`), or None.
        scaler: the fp16 GradScaler, or None when not training in fp16 on CUDA.
    """

    model: RSIS
    optimizer: torch.optim.Optimizer
    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    scaler: torch.amp.GradScaler | None = None

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer, scheduler, GradScaler, epoch, history and the RNG states
        (torch, CUDA, numpy, python)."""
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
        rng = sd.get("rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            np.random.set_state(rng["numpy"])
            random.setstate(rng["python"])


class Hook:
    """Callbacks of the training loop; subclass and override what you need.

    Hooks run on every rank; a hook with side effects (files, tracking) should act on
    rank 0 only.
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
    """Adam with three parameter groups: encoder, decoder (with the class and stop
    heads), IoU branch (empty without one)."""
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
    """Per-epoch LambdaLR over the three groups of `make_optimizer` (see
    ``TrainConfig.lr_schedule``); step it once after every epoch."""
    kind, seg = cfg.lr_schedule, cfg.epochs

    def seg_factor(e: int) -> float:
        return _lr_factor(kind, e, seg)

    def iou_factor(e: int) -> float:
        if cfg.iou_schedule == "freeze":
            return _lr_factor(kind, e - seg, cfg.iou_epochs)
        return _lr_factor(kind, e, seg)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [seg_factor, seg_factor, iou_factor])


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    return amp_dtype(cfg.amp, device)


def _freeze_bn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def total_epochs(cfg: TrainConfig, model: RSIS) -> int:
    """Epochs of the whole run: no IoU-only phase for a model without an IoU branch."""
    return cfg.total_epochs if model.cfg.iou_head else cfg.epochs


def _phase(cfg: TrainConfig, epoch: int) -> str:
    if cfg.iou_schedule == "joint":
        return "joint"
    return "segment" if epoch < cfg.epochs else "iou"


def _set_trainable(model: RSIS, phase: str) -> tuple[str, ...]:
    """Set requires_grad for the phase and return the loss terms it trains."""
    iou_ids = set(id(p) for p in model.iou_parameters())
    for p in model.parameters():
        is_iou = id(p) in iou_ids
        p.requires_grad_(phase == "joint" or (phase == "segment") != is_iou)
    if phase == "iou":
        model.eval()  # frozen means frozen: BatchNorm statistics too
        return ("iou",)
    model.train()
    if phase == "segment" or not model.cfg.iou_head:
        return SEG_PARTS
    return ALL_PARTS


def holdout_split(n: int, frac: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of the segmentation images and of the IoU-branch images.

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
    differ by that step's update until the next DDP forward; the IoU phase and the
    caller see the model outside DDP."""
    if _world()[0] > 1:
        for buf in model.buffers():
            dist.broadcast(buf, 0)


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


def train(model: RSIS, dataset: Dataset, cfg: TrainConfig, loss_cfg: LossConfig = LossConfig(),
          hooks: Sequence[Hook] = (), device: str | torch.device = "cpu",
          state: dict[str, Any] | None = None, progress: bool = False) -> TrainState:
    """Train ``model`` on ``dataset`` for ``cfg.total_epochs`` epochs, or what is left.

    Args:
        model: the network (moved to ``device``; trained in place).
        dataset: items are `basis.types.Sample`.
        cfg: schedule and optimiser settings (a model without an IoU branch skips the
            IoU-only epochs).
        loss_cfg: loss weights and IoU target.
        hooks: callbacks, called in order.
        device: where to train.
        state: a `TrainState.state_dict()` to resume from; None starts fresh and seeds
            torch, numpy and python from ``cfg.seed``. The weights are the caller's:
            build the model with ``RSIS(model_cfg, seed=...)`` for a reproducible run.
        progress: show a progress bar (rank 0 only).

    Returns:
        The final TrainState (``history`` holds one metrics dict per epoch with keys
        ``epoch``, ``phase_iou`` (1.0 in the IoU-only phase), ``loss`` and each term,
        ``lr_encoder``, ``lr_decoder``, ``lr_iou``, ``images``, ``seconds``, ``img_per_s``).
    """
    world, rank = _world()
    device = torch.device(device)
    if state is None:
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
    model.to(device)
    channels_last = cfg.channels_last and device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    scaler = (torch.amp.GradScaler("cuda")
              if _amp_dtype(cfg, device) == torch.float16 else None)
    ts = TrainState(model=model, optimizer=optimizer,
                    scheduler=make_scheduler(optimizer, cfg), scaler=scaler)
    if state is not None:
        ts.load_state_dict(state)

    holdout = (cfg.iou_holdout if cfg.iou_schedule == "freeze" and model.cfg.iou_head
               else 0.0)
    seg_idx, iou_idx = holdout_split(len(dataset), holdout, cfg.seed)  # type: ignore[arg-type]
    seg_set = dataset if holdout == 0.0 else Subset(dataset, seg_idx)
    iou_set = dataset if holdout == 0.0 else Subset(dataset, iou_idx)
    sampler: DistributedSampler = DistributedSampler(
        seg_set, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=False)
    # A last batch of one image breaks BatchNorm in training (1×1 maps in layer4 at
    # small sizes), so only such a batch is dropped; it holds a different image each epoch.
    loader = DataLoader(seg_set, batch_size=cfg.batch_size, sampler=sampler,
                        num_workers=cfg.num_workers, collate_fn=collate,
                        drop_last=len(sampler) % cfg.batch_size == 1 and len(sampler) > 1)
    for h in hooks:
        h.before_train(ts)

    wrapped: nn.Module = model
    wrapped_phase = None
    iou_cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    n_epochs = total_epochs(cfg, model)
    while ts.epoch < n_epochs:
        phase = _phase(cfg, ts.epoch)
        parts = _set_trainable(model, phase)
        if cfg.freeze_bn:
            _freeze_bn(model)
        if phase == "iou":
            if iou_cache is None:
                _sync_buffers(model)
                # Each rank fits on its shard (padded to equal sizes, so every rank
                # takes the same number of steps); gradients are all-reduced.
                shard = list(DistributedSampler(iou_set, num_replicas=world, rank=rank,
                                                shuffle=False))
                iou_cache = iou_training_set(model, Subset(iou_set, shard),
                                             cfg.batch_size, device, amp=cfg.amp,
                                             channels_last=channels_last)
            metrics = _run_iou_epoch(model, iou_cache, ts.optimizer, cfg, loss_cfg, device,
                                     ts.epoch)
        else:
            if wrapped_phase != phase:
                # DDP registers the parameters that require grad when it is built, so
                # the wrapper is rebuilt whenever the set of trainable parameters changes.
                wrapped = (DistributedDataParallel(model, device_ids=[device.index]
                                                   if device.type == "cuda" else None)
                           if world > 1 else model)
                wrapped_phase = phase
            sampler.set_epoch(ts.epoch)
            metrics = _run_epoch(wrapped, model, loader, ts.optimizer, cfg, loss_cfg, parts,
                                 device, progress and rank == 0, ts.epoch, ts.scaler,
                                 channels_last)
        metrics["phase_iou"] = float(phase == "iou")
        if ts.scheduler is not None:
            ts.scheduler.step()
        ts.epoch += 1
        ts.history.append(metrics)
        log.info("epoch %d/%d %s", ts.epoch, n_epochs,
                 " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        for h in hooks:
            h.after_epoch(ts, metrics)
    _sync_buffers(model)
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    for h in hooks:
        h.after_train(ts)
    return ts


def _run_iou_epoch(model: RSIS, cache: list[tuple[torch.Tensor, torch.Tensor]],
                   optimizer: torch.optim.Optimizer, cfg: TrainConfig, loss_cfg: LossConfig,
                   device: torch.device, epoch: int) -> dict[str, float]:
    """One IoU-only epoch on cached features: ``cfg.iou_passes`` shuffled passes, one
    L1 step per ``cfg.batch_size`` images (mean over their objects)."""
    world = _world()[0]
    params = model.iou_parameters()
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    sums = {"iou": 0.0, "loss": 0.0}
    n_batches = 0
    t0 = time.perf_counter()
    for _ in range(cfg.iou_passes):
        order = torch.randperm(len(cache), generator=gen).tolist()
        for i in range(0, len(order), cfg.batch_size):
            chunk = [cache[j] for j in order[i:i + cfg.batch_size]]
            feats = torch.cat([c[0] for c in chunk]).to(device)
            target = iou_target_transform(torch.cat([c[1] for c in chunk]).to(device),
                                          loss_cfg.iou_target)
            pred = model.iou_from_features(feats)
            l1 = F.l1_loss(pred, target) if target.numel() else pred.sum() * 0.0
            loss = loss_cfg.w_iou * l1
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if world > 1:
                for p in params:
                    dist.all_reduce(p.grad)
                    p.grad /= world
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            sums["iou"] += float(l1.detach())
            sums["loss"] += float(loss.detach())
            n_batches += 1
    return _epoch_metrics(_average(sums, n_batches), optimizer, epoch,
                          len(cache) * cfg.iou_passes, time.perf_counter() - t0)


def _run_epoch(wrapped: nn.Module, model: RSIS, loader: Iterable[dict],
               optimizer: torch.optim.Optimizer, cfg: TrainConfig, loss_cfg: LossConfig,
               parts: tuple[str, ...], device: torch.device, progress: bool,
               epoch: int, scaler: torch.amp.GradScaler | None = None,
               channels_last: bool = False) -> dict[str, float]:
    sums: dict[str, float] = {}
    n_batches = 0
    n_images = 0
    t0 = time.perf_counter()
    it: Iterable[dict] = loader
    if progress:
        from torch.hub import tqdm  # tqdm when installed, a plain fallback otherwise

        it = tqdm(loader, desc=f"epoch {epoch + 1}", leave=False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    dtype = _amp_dtype(cfg, device)
    for batch in it:
        batch["images"] = batch["images"].to(device, non_blocking=True)
        if channels_last:
            batch["images"] = batch["images"].contiguous(memory_format=torch.channels_last)
        class_seq = None
        if model.cfg.weak:
            steps = max(1, max(int(lab.numel()) for lab in batch["labels"]))
            class_seq = class_sequence(batch["labels"], batch["masks"], steps,
                                       cfg.class_order).to(device)
            batch["class_seq"] = class_seq
        with autocast(device, dtype):
            out = wrapped(batch["images"], class_seq)
        loss, logs = rsis_loss(float_output(out), batch, loss_cfg, parts)
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
        n_images += int(batch["images"].shape[0])
    return _epoch_metrics(_average(sums, n_batches), optimizer, epoch, n_images,
                          time.perf_counter() - t0)


def _epoch_metrics(metrics: dict[str, float], optimizer: torch.optim.Optimizer, epoch: int,
                   n_images: int, secs: float) -> dict[str, float]:
    """An epoch's averaged losses plus its learning rates, size and speed."""
    metrics.update({
        "epoch": float(epoch + 1),
        "lr_encoder": float(optimizer.param_groups[0]["lr"]),
        "lr_decoder": float(optimizer.param_groups[1]["lr"]),
        "lr_iou": float(optimizer.param_groups[2]["lr"]),
        "images": float(n_images),
        "seconds": secs,
        "img_per_s": n_images / max(secs, 1e-9),
    })
    return metrics
