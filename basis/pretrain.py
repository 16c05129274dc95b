"""Pretraining the encoder: the stand-in for ImageNet weights.

The paper and RSIS start the ResNet encoder from ImageNet weights (encoder lr 1e-6).
None can be downloaded here, and from random weights no run reaches the paper's regime,
so a sweep trains the encoder once on a large synthetic set disjoint from the study's
data (`pretrain_data`: another data seed, an id range no study split uses, and by
default other colours) and every stage starts from it through
``ModelConfig(encoder_weights=path)``.

The task is what ImageNet pretraining is, classification of what is in the image:
``task="multilabel"`` (default) puts a linear head on the global-average-pooled last
encoder map and trains presence of each class with binary cross-entropy.
``"multilabel+fg"`` adds a 1×1-conv foreground head on layer2 (stride 8), trained with
a void-weighted BCE on the area-pooled union of the instance masks; ``"multilabel+seg"``
a semantic head there instead (background + C classes, soft-target cross-entropy on the
area-pooled class map). The input is
normalised with the ImageNet mean and std, as `basis.models.rsis.RSIS` does, so the
features it learns are the ones RSIS sees. BatchNorm trains in training mode.

One code path serves one process and DDP (`torch.distributed` initialised, e.g. gloo
at world size 2): the data is sharded with a `DistributedSampler`, the network wrapped
in `DistributedDataParallel`, the metrics all-reduced and rank 0's BatchNorm
statistics copied to every rank at the end, so every rank returns the same encoder.
Shuffling, flips and the learning rate are functions of (seed, epoch, step) only, so a
run resumed from `PretrainState.state_dict()` ends with the same weights as the
uninterrupted run (bit-identical on CPU).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from basis.data.synthetic import SyntheticConfig, SyntheticShapes
from basis.models.rsis import IMAGENET_MEAN, IMAGENET_STD, ModelConfig, ResNetEncoder
from basis.train import Hook, _sync_buffers, _world
from basis.types import Sample

log = logging.getLogger(__name__)

TASKS = ("multilabel", "multilabel+fg", "multilabel+seg")
APPEARANCES = ("same", "permute_rgb")
#: First image id of the pretraining set: beyond the study's pool (0…), test
#: (1_000_000…) and additional (2_000_000…) ranges, so no id is shared with them.
PRETRAIN_ID_OFFSET = 3_000_000
#: The six orders of the RGB channels (`appearance="permute_rgb"`).
_PERMS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


@dataclass(frozen=True)
class PretrainConfig:
    """How the encoder is pretrained.

    Defaults are sized for 2 CPU threads at 64 px: 4000 images × 6 epochs is
    24 000 image passes (750 steps of 32), ~6.5 min at the 61 img/s measured for
    ResNet-18 pretraining at 64 px on 2 threads of an otherwise idle 2-core machine
    (6–25 img/s while other jobs share the cores). Check ``PretrainResult.metrics
    ["eval_f1"]``: on 600–1000 images and ~150 steps the class head had not yet left
    the prior (F1 0), while a foreground head had (loss 0.43 → 0.24).

    Attributes:
        n_images: images of the pretraining set (`pretrain_data`).
        epochs: passes over it.
        batch_size: images per step and process.
        lr: peak AdamW learning rate (linear warm-up over ``warmup_steps``, then
            cosine decay to 0 at the last step).
        weight_decay: AdamW weight decay.
        warmup_steps: steps of linear warm-up (capped at a tenth of all steps).
        data_seed: data seed of the pretraining images; keep it apart from the study's
            data seeds (they are small integers; 1000 by default).
        task: "multilabel" (class presence, BCE; default), "multilabel+fg" (plus a
            foreground head on layer2) or "multilabel+seg" (plus a semantic head on
            layer2); see the module docstring.
        fg_weight: weight of the dense (foreground or semantic) term.
        appearance: "permute_rgb" (default): every pretraining image has its RGB
            channels in one of the six orders, drawn from (data_seed, image id), so
            its colours differ from the study's palette while shapes and textures stay
            (ImageNet, too, is another distribution of the same kind of image);
            "same": the study's appearance, only the seed and ids differ.
        flip: random horizontal flips (from seed, epoch and step).
        seed: seeds the initial weights of the encoder and heads and the shuffles.
    """

    n_images: int = 4000
    epochs: int = 6
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    data_seed: int = 1000
    task: str = "multilabel"
    fg_weight: float = 1.0
    appearance: str = "permute_rgb"
    flip: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r} not in {TASKS}")
        if self.appearance not in APPEARANCES:
            raise ValueError(f"appearance={self.appearance!r} not in {APPEARANCES}")
        for name in ("n_images", "epochs", "batch_size"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ValueError(f"{name}={v!r} must be an int >= 1")
        for name in ("warmup_steps", "data_seed", "seed"):
            v = getattr(self, name)
            if not _is_int(v) or v < 0:
                raise ValueError(f"{name}={v!r} must be an int >= 0")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr={self.lr!r} must be a finite number > 0")
        for name in ("weight_decay", "fg_weight"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name}={v!r} must be a finite number >= 0")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# -- data ---------------------------------------------------------------------------------

class PermuteRGB:
    """A `Sample` transform: the image's channels in one of six orders, chosen by
    (seed, image id) alone, so an item stays a pure function of its id."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def __call__(self, s: Sample) -> Sample:
        k = int(np.random.default_rng((self.seed, 7, int(s.image_id))).integers(len(_PERMS)))
        return Sample(image=s.image[list(_PERMS[k])], masks=s.masks, labels=s.labels,
                      ignore=s.ignore, image_id=s.image_id)


def pretrain_data(synthetic: SyntheticConfig, cfg: PretrainConfig) -> SyntheticShapes:
    """The pretraining images: disjoint from every study split.

    Drawn with the study's generator (same image size, version and classes) but
    ``cfg.data_seed`` and ids ``PRETRAIN_ID_OFFSET …`` + ``cfg.n_images`` (no study
    split uses them), with ``cfg.appearance`` applied.

    Returns:
        A `SyntheticShapes` of ``cfg.n_images`` items.
    """
    transform = PermuteRGB(cfg.data_seed) if cfg.appearance == "permute_rgb" else None
    return SyntheticShapes(synthetic, cfg.data_seed,
                           range(PRETRAIN_ID_OFFSET, PRETRAIN_ID_OFFSET + cfg.n_images),
                           transform=transform)


class _Targets(Dataset):
    """Items of ``data`` as pretraining needs them, images cached as uint8.

    Item: (image (3, H, W) uint8, present (C,) float32, semantic map (H, W) int64 (0
    background, else the class of the visible instance), valid (H, W) float32 = not
    void). The cache lives in the process
    (the loader uses no workers); uint8 keeps 4000 64-px images in 50 MB.
    """

    def __init__(self, data: Dataset, n_classes: int) -> None:
        self.data, self.n_classes = data, n_classes
        self._cache: dict[int, tuple[torch.Tensor, ...]] = {}

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        item = self._cache.get(i)
        if item is None:
            s: Sample = self.data[i]
            labels = s.labels.long()
            if labels.numel() and (int(labels.min()) < 1 or int(labels.max()) > self.n_classes):
                raise ValueError(f"image {s.image_id} has labels {labels.tolist()} outside "
                                 f"1..{self.n_classes} (ModelConfig.n_classes)")
            present = torch.zeros(self.n_classes, dtype=torch.float32)
            present[labels - 1] = 1.0
            image = (s.image.clamp(0, 1) * 255).round().to(torch.uint8)
            sem = torch.zeros(s.image.shape[-2:], dtype=torch.int16)
            for m, c in zip(s.masks, labels.tolist()):
                sem[m] = c
            item = (image, present, sem, ~s.ignore.bool())
            self._cache[i] = item
        image, present, sem, valid = item
        return image, present, sem.long(), valid.float()


# -- the network --------------------------------------------------------------------------

class PretrainNet(nn.Module):
    """The RSIS encoder with classification heads.

    Args:
        model_cfg: the study's architecture (``backbone``, ``n_classes``; an
            ``encoder_weights`` file, when given, is the starting point).
        task: one of `TASKS`.
    """

    def __init__(self, model_cfg: ModelConfig, task: str) -> None:
        super().__init__()
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                             persistent=False)
        self.encoder = ResNetEncoder(model_cfg.backbone, model_cfg.encoder_weights)
        c = self.encoder.channels
        self.fc = nn.Linear(c[4], model_cfg.n_classes)
        dense = {"multilabel+fg": 1, "multilabel+seg": model_cfg.n_classes + 1}.get(task)
        self.fg = nn.Conv2d(c[2], dense, 1) if dense is not None else None

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Args: images (B, 3, H, W) in [0, 1]. Returns class logits (B, C) and the
        dense head's logits on layer2, (B, 1, H/8, W/8) foreground ("multilabel+fg") or
        (B, C+1, H/8, W/8) semantic ("multilabel+seg"), None without one."""
        feats = self.encoder((images - self.mean) / self.std)
        logits = self.fc(feats[4].mean(dim=(2, 3)))
        fg = self.fg(feats[2]) if self.fg is not None else None
        return logits, fg


# -- state --------------------------------------------------------------------------------

@dataclass
class PretrainState:
    """Everything a pretraining run is, between two epochs.

    Attributes:
        model: the `PretrainNet` (unwrapped); ``model.encoder`` is the RSIS encoder.
        optimizer: AdamW over all its parameters.
        epoch: epochs completed.
        history: the metrics dict of every completed epoch.
        config: the run's `PretrainConfig` (informative; a resumed run uses the
            config it is given).
    """

    model: PretrainNet
    optimizer: torch.optim.Optimizer
    config: PretrainConfig
    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def encoder(self) -> ResNetEncoder:
        return self.model.encoder

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer, epoch, history and the config (a plain dict: loadable with
        ``torch.load(weights_only=True)``)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "history": [dict(h) for h in self.history],
            "config": asdict(self.config),
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.model.load_state_dict(sd["model"])
        self.optimizer.load_state_dict(sd["optimizer"])
        self.epoch = int(sd["epoch"])
        self.history = [dict(h) for h in sd["history"]]


@dataclass
class PretrainResult:
    """What `pretrain_encoder` returns.

    Attributes:
        encoder_state: the state dict of the encoder (keys as `RSIS(model_cfg).encoder`
            and torchvision name them, CPU tensors); `save_encoder` makes a file of it.
        history: one metrics dict per epoch: ``epoch``, ``loss``, ``bce``, (``fg``),
            ``f1`` (micro F1 of class presence at p > 0.5 on the epoch's training
            batches, training mode), ``exact`` (fraction of images with every class
            right), ``lr``, ``images``, ``seconds``, ``img_per_s``.
        metrics: the last epoch's metrics plus ``eval_f1`` / ``eval_exact``: the same
            scores in eval mode (running BatchNorm statistics) on up to 512 of the
            training images, as the encoder is used downstream.
        config: the configuration it was trained with.
        state: the final `PretrainState`.
    """

    encoder_state: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    metrics: dict[str, float]
    config: PretrainConfig
    state: PretrainState


# -- training -----------------------------------------------------------------------------

def _lr_at(cfg: PretrainConfig, step: int, total: int) -> float:
    """Learning rate of 0-based optimizer ``step`` of ``total``."""
    warm = min(cfg.warmup_steps, total // 10)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    frac = (step - warm) / max(total - warm, 1)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0)))


def _all_sum(values: list[float]) -> list[float]:
    vec = torch.tensor(values, dtype=torch.float64)
    if _world()[0] > 1:
        dist.all_reduce(vec)
    return vec.tolist()


def _losses(logits: torch.Tensor, fg_logits: torch.Tensor | None, present: torch.Tensor,
            sem: torch.Tensor, valid: torch.Tensor, cfg: PretrainConfig
            ) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss and its terms. The dense target is the semantic map (B, H, W) pooled
    over each output cell's pixels, void pixels left out; a cell weighs by its non-void
    fraction."""
    bce = F.binary_cross_entropy_with_logits(logits, present)
    loss, logs = bce, {"bce": float(bce.detach())}
    if fg_logits is not None:
        size = (int(fg_logits.shape[-2]), int(fg_logits.shape[-1]))
        w = F.adaptive_avg_pool2d(valid[:, None], size)  # (B, 1, h, w)
        if fg_logits.shape[1] == 1:
            onehot = (sem > 0).float()[:, None]
        else:
            onehot = F.one_hot(sem, fg_logits.shape[1]).permute(0, 3, 1, 2).float()
        target = F.adaptive_avg_pool2d(onehot * valid[:, None], size) / w.clamp(min=1e-6)
        if fg_logits.shape[1] == 1:
            per_cell = F.binary_cross_entropy_with_logits(fg_logits, target.clamp(0, 1),
                                                          reduction="none")
        else:  # soft-target cross-entropy
            per_cell = -(target * F.log_softmax(fg_logits, 1)).sum(1, keepdim=True)
        fg_loss = (per_cell * w).sum() / w.sum().clamp(min=1e-6)
        loss = loss + cfg.fg_weight * fg_loss
        logs["fg"] = float(fg_loss.detach())
    logs["loss"] = float(loss.detach())
    return loss, logs


def _counts(logits: torch.Tensor, present: torch.Tensor) -> list[float]:
    """[tp, fp, fn, exact images, images] of presence at p > 0.5."""
    pred = logits.detach() > 0
    true = present > 0.5
    return [float((pred & true).sum()), float((pred & ~true).sum()),
            float((~pred & true).sum()), float((pred == true).all(1).sum()),
            float(pred.shape[0])]


def _scores(c: Sequence[float]) -> dict[str, float]:
    tp, fp, fn, exact, n = c
    return {"f1": 2 * tp / max(2 * tp + fp + fn, 1.0), "exact": exact / max(n, 1.0)}


class _Pretrainer:
    """One pretraining run (see `pretrain_encoder`)."""

    def __init__(self, model_cfg: ModelConfig, data: Dataset, cfg: PretrainConfig,
                 hooks: Sequence[Hook], state: dict[str, Any] | None, progress: bool,
                 device: torch.device) -> None:
        self.cfg, self.hooks, self.progress, self.device = cfg, list(hooks), progress, device
        self.world, self.rank = _world()
        if len(data) == 0:  # type: ignore[arg-type]
            raise ValueError("the pretraining set is empty")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            net = PretrainNet(model_cfg, cfg.task)
        self.model = net.to(device)
        self.items = _Targets(data, model_cfg.n_classes)
        self.sampler: DistributedSampler = DistributedSampler(
            self.items, num_replicas=self.world, rank=self.rank, shuffle=True,
            seed=cfg.seed, drop_last=False)
        # A batch of one image breaks BatchNorm in training (1×1 maps in layer4): drop
        # the last partial batch when the shard holds at least one full one.
        drop = len(self.sampler) >= cfg.batch_size
        self.loader = DataLoader(self.items, batch_size=cfg.batch_size, sampler=self.sampler,
                                 drop_last=drop, num_workers=0)
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0 or (not drop and len(self.sampler) < 2):
            raise ValueError(f"{len(self.items)} images on {self.world} process(es) give no "
                             f"training batch of at least 2 images")
        self.total_steps = self.steps_per_epoch * cfg.epochs
        if state is None:
            self._init_prior()
        opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr,
                                weight_decay=cfg.weight_decay,
                                fused=True if device.type in ("cpu", "cuda") else None)
        self.state = PretrainState(model=self.model, optimizer=opt, config=cfg)
        if state is not None:
            self.state.load_state_dict(state)
        self._wrapped: nn.Module = (DistributedDataParallel(
            self.model, device_ids=[device.index] if device.type == "cuda" else None)
            if self.world > 1 else self.model)

    @torch.no_grad()
    def _init_prior(self, most: int = 64) -> None:
        """Start the class head at the log-odds of the classes' mean frequency in the
        first ``most`` images (the same on every rank), so the first steps do not
        spend themselves on learning that most classes are absent."""
        rows = [self.items[i][1] for i in range(min(most, len(self.items)))]
        p = float(torch.stack(rows).mean().clamp(0.01, 0.99))
        self.model.fc.bias.fill_(math.log(p / (1.0 - p)))

    def train(self) -> PretrainResult:
        ts = self.state
        try:
            for h in self.hooks:
                h.before_train(ts)  # type: ignore[arg-type]
            while ts.epoch < self.cfg.epochs:
                metrics = self.run_epoch()
                for h in self.hooks:
                    h.after_epoch(ts, metrics)  # type: ignore[arg-type]
            _sync_buffers(self.model)  # a collective: not on the way out of an error
            final = dict(ts.history[-1]) if ts.history else {}
            final.update({f"eval_{k}": v for k, v in self.evaluate().items()})
        finally:
            self.model.train()
            for h in self.hooks:
                h.after_train(ts)  # type: ignore[arg-type]
        enc = {k: v.detach().to("cpu", copy=True) for k, v in ts.encoder.state_dict().items()}
        return PretrainResult(encoder_state=enc, history=[dict(h) for h in ts.history],
                              metrics=final, config=self.cfg, state=ts)

    def _batch(self, batch: Sequence[torch.Tensor], epoch: int, step: int
               ) -> tuple[torch.Tensor, ...]:
        images, present, sem, valid = (t.to(self.device) for t in batch)
        images = images.float() / 255.0
        if self.cfg.flip:
            gen = torch.Generator().manual_seed(
                ((self.cfg.seed * 1_000_003 + epoch) * 100_003 + step) * 101 + self.rank)
            flip = (torch.rand(images.shape[0], generator=gen) < 0.5).to(self.device)
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
            sem = torch.where(flip[:, None, None], sem.flip(-1), sem)
            valid = torch.where(flip[:, None, None], valid.flip(-1), valid)
        return images, present, sem, valid

    def run_epoch(self) -> dict[str, float]:
        ts, cfg = self.state, self.cfg
        epoch = ts.epoch
        self.model.train()
        self.sampler.set_epoch(epoch)
        sums: dict[str, float] = {}
        counts = [0.0] * 5
        n_batches, n_images = 0, 0
        t0 = time.perf_counter()
        it: Any = self.loader
        if self.progress and self.rank == 0:
            from torch.hub import tqdm

            it = tqdm(self.loader, desc=f"pretrain {epoch + 1}", leave=False)
        lr = cfg.lr
        for step, batch in enumerate(it):
            images, present, fg, valid = self._batch(batch, epoch, step)
            lr = _lr_at(cfg, epoch * self.steps_per_epoch + step, self.total_steps)
            for g in ts.optimizer.param_groups:
                g["lr"] = lr
            logits, fg_logits = self._wrapped(images)
            loss, logs = _losses(logits, fg_logits, present, fg, valid, cfg)
            ts.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            ts.optimizer.step()
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            counts = [a + b for a, b in zip(counts, _counts(logits, present))]
            n_batches += 1
            n_images += int(images.shape[0])
        keys = sorted(sums)
        tot = _all_sum([sums[k] for k in keys] + [float(n_batches)] + counts)
        metrics = {k: tot[i] / max(tot[len(keys)], 1.0) for i, k in enumerate(keys)}
        metrics.update(_scores(tot[len(keys) + 1:]))
        secs = time.perf_counter() - t0
        metrics.update({"epoch": float(epoch + 1), "lr": lr, "images": float(n_images),
                        "seconds": secs, "img_per_s": n_images / max(secs, 1e-9)})
        ts.epoch += 1
        ts.history.append(metrics)
        log.info("pretrain epoch %d/%d %s", ts.epoch, cfg.epochs,
                 " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        return metrics

    @torch.no_grad()
    def evaluate(self, most: int = 512) -> dict[str, float]:
        """Presence scores in eval mode on this rank's share of the first ``most``
        training images, all-reduced."""
        self.model.eval()
        idx = list(range(min(most, len(self.items))))[self.rank::self.world]
        counts = [0.0] * 5
        for i in range(0, len(idx), self.cfg.batch_size):
            rows = [self.items[j] for j in idx[i:i + self.cfg.batch_size]]
            images = torch.stack([r[0] for r in rows]).to(self.device).float() / 255.0
            present = torch.stack([r[1] for r in rows]).to(self.device)
            logits, _ = self.model(images)
            counts = [a + b for a, b in zip(counts, _counts(logits, present))]
        return _scores(_all_sum(counts))


def pretrain_encoder(model_cfg: ModelConfig, data: Dataset, cfg: PretrainConfig,
                     hooks: Sequence[Hook] = (), state: dict[str, Any] | None = None,
                     progress: bool = False, device: str | torch.device = "cpu"
                     ) -> PretrainResult:
    """Pretrain the encoder of ``RSIS(model_cfg)`` on ``data`` (`pretrain_data`).

    Args:
        model_cfg: the study's architecture: its ``backbone`` and ``n_classes`` shape
            the network; a given ``encoder_weights`` file is the starting point.
        data: items are `basis.types.Sample` with labels in 1..``model_cfg.n_classes``.
        cfg: the schedule and task.
        hooks: `basis.train.Hook`-like callbacks: ``before_train(state)``,
            ``after_epoch(state, metrics)``, ``after_train(state)`` (also when training
            raises). ``state`` is the `PretrainState` (``.epoch``, ``.state_dict()``).
            They run on every rank; side effects belong on rank 0.
        state: a `PretrainState.state_dict()` to resume from; the run then ends with
            the weights the uninterrupted run would have.
        progress: a progress bar on rank 0.
        device: where to train.

    Returns:
        The `PretrainResult`; under DDP every rank returns the same encoder.
    """
    return _Pretrainer(model_cfg, data, cfg, hooks, state, progress,
                       torch.device(device)).train()


def save_encoder(obj: PretrainResult | PretrainState | dict[str, Any],
                 path: str | None = None) -> dict[str, Any]:
    """What to ``torch.save`` so that ``ModelConfig(encoder_weights=path)`` loads it.

    Args:
        obj: a `PretrainResult`, a `PretrainState`, a `PretrainState.state_dict()` or an
            encoder state dict.
        path: when given, the payload is also written there (not atomically: a job
            writes to a temporary name and renames).

    Returns:
        ``{"encoder": encoder state (CPU tensors), "pretrain": {config, metrics}}``;
        `basis.models.rsis.load_encoder_weights` reads the ``encoder`` entry.
    """
    meta: dict[str, Any] = {}
    if isinstance(obj, PretrainResult):
        enc, meta = obj.encoder_state, {"config": asdict(obj.config),
                                        "metrics": dict(obj.metrics)}
    elif isinstance(obj, PretrainState):
        enc = obj.encoder.state_dict()
        meta = {"config": asdict(obj.config), "epoch": obj.epoch}
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        enc = {k.removeprefix("encoder."): v for k, v in obj["model"].items()
               if k.startswith("encoder.")}
        meta = {"config": obj.get("config"), "epoch": obj.get("epoch")}
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        enc = obj
    else:
        raise TypeError(f"save_encoder takes a PretrainResult, PretrainState, its state "
                        f"dict or an encoder state dict, not {type(obj).__name__}")
    if not enc:
        raise ValueError("no encoder weights found in the object given to save_encoder")
    payload = {"encoder": {k: v.detach().to("cpu", copy=True) for k, v in enc.items()},
               "pretrain": meta}
    if path is not None:
        torch.save(payload, path)
    return payload


__all__ = ["TASKS", "APPEARANCES", "PRETRAIN_ID_OFFSET", "PretrainConfig", "PretrainNet",
           "PretrainState", "PretrainResult", "PermuteRGB", "pretrain_data",
           "pretrain_encoder", "save_encoder"]
