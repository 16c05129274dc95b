"""The `Trainer` behind `basis.train.train`: phases, hooks, named groups, the loss's
class sequence, and training to convergence (steps budget, early stopping with the best
weights restored, the loss schedule)."""
from __future__ import annotations

import copy
import json
import math
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from basis.data import SyntheticConfig, SyntheticShapes
from basis.data.synthetic import collate
from basis.losses import LossConfig, class_sequence, rsis_loss
from basis.models import RSIS, ModelConfig
from basis.train import (
    SEG_PARTS,
    Hook,
    Phase,
    TrainConfig,
    Trainer,
    TrainState,
    batches_per_epoch,
    epochs_for_steps,
    make_optimizer,
    make_scheduler,
    phase_of,
    segmentation_loss,
    train,
)
from tests.basis.test_train import _Recorder  # one recording hook for both files

TIMING = ("seconds", "img_per_s")
DATA = SyntheticShapes(SyntheticConfig(image_size=32), seed=0, ids=range(4))
MODEL = ModelConfig(hidden=16, n_classes=20)
OLD_KEYS = {"model", "optimizer", "scheduler", "scaler", "epoch", "history", "rng"}


def _model(cfg: ModelConfig = MODEL) -> RSIS:
    return RSIS(cfg, seed=0)


def _strip(history):
    return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


def _equal_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
                   skip: str = "\0") -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if skip not in k)


class _Weights(Hook):
    """The model's weights as each epoch's hooks see them (by 1-based epoch)."""

    def __init__(self) -> None:
        self.by_epoch: dict[int, dict[str, torch.Tensor]] = {}

    def after_epoch(self, state, metrics):
        self.by_epoch[state.epoch] = copy.deepcopy(state.model.state_dict())


class _Spike(Hook):
    """Undo the training from epoch ``at`` (1-based) on: after each segmentation epoch
    from then to before the last (``last``, or the early stop), put back the weights
    training started from and train the next epoch at learning rate ``lr`` (0: they
    stay). Those weights validate worse than trained ones whatever the numerics of the
    machine, so epoch ``at`` stays the best. List it after a hook that records an
    epoch's weights: those are the weights that epoch validated. A run resumed after
    epoch ``at`` starts from these weights, so it undoes alike."""

    def __init__(self, at: int, last: int = 8, lr: float = 0.0) -> None:
        self.at, self.last, self.lr, self.start = at, last, lr, None

    def before_train(self, state):
        self.start = copy.deepcopy(state.model.state_dict())

    def after_epoch(self, state, metrics):
        if (state.epoch < self.at or metrics.get("phase_iou", 0.0) != 0.0
                or state.epoch >= self.last or state.stopped_epoch is not None):
            return      # the segmentation's last epoch: its end restores the best weights
        state.model.load_state_dict(self.start)
        for g in state.optimizer.param_groups:
            g["lr"] = self.lr


class _Stop(Exception):
    pass


class _StopAfter(Hook):
    def __init__(self, n: int) -> None:
        self.n, self.saved = n, None

    def after_epoch(self, state, metrics):
        if state.epoch == self.n:
            self.saved = copy.deepcopy(state.state_dict())
            raise _Stop


# -- the refactor ----------------------------------------------------------------------

def test_phase_is_a_string_enum():
    assert Phase.SEGMENT == "segment" and Phase.IOU == "iou" and Phase.JOINT == "joint"
    assert json.dumps({"p": Phase.IOU}) == '{"p": "iou"}' and f"{Phase.JOINT}" == "joint"
    assert Phase("segment") is Phase.SEGMENT
    freeze, joint = TrainConfig(epochs=2, iou_epochs=1), TrainConfig(iou_schedule="joint")
    assert [phase_of(freeze, e) for e in range(3)] == ["segment", "segment", "iou"]
    assert phase_of(joint, 5) is Phase.JOINT


def _reference_segmentation(model: RSIS, data, cfg: TrainConfig) -> list[float]:
    """The segmentation loop written out by hand for one process (the behaviour that
    the default configuration must keep): seeding, the (seed, epoch) shuffle, W-RSIS
    class sequences, `rsis_loss` on the three segmentation terms, fused Adam.

    Returns:
        The per-batch mean loss of every epoch.
    """
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    for p in model.iou_parameters():
        p.requires_grad_(False)
    opt = make_optimizer(model, cfg)
    sampler: DistributedSampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True,
                                                     seed=cfg.seed)
    losses = []
    for epoch in range(cfg.epochs):
        sampler.set_epoch(epoch)
        model.train()
        total, n = 0.0, 0
        for batch in DataLoader(data, batch_size=cfg.batch_size, sampler=sampler,
                                collate_fn=collate):
            steps = max(1, max(int(lab.numel()) for lab in batch["labels"]))
            seq = class_sequence(batch["labels"], batch["masks"], steps, cfg.class_order)
            out = model(batch["images"], seq)
            loss, _ = rsis_loss(out, {**batch, "class_seq": seq}, LossConfig(), SEG_PARTS)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, n = total + float(loss.detach()), n + 1
        losses.append(total / n)
    return losses


def test_default_config_trains_as_the_reference_loop():
    """Bit-identical weights and losses; the new fields at their defaults, and a
    ``steps`` budget of exactly those epochs, change nothing."""
    cfg = TrainConfig(epochs=2, iou_epochs=0, batch_size=2, seed=4)
    ref_model = _model()
    ref_losses = _reference_segmentation(ref_model, DATA, cfg)
    ts = train(_model(), DATA, cfg)
    assert [h["loss"] for h in ts.history] == pytest.approx(ref_losses, rel=1e-12)
    assert _equal_weights(ts.model.state_dict(), ref_model.state_dict())
    assert "val_loss" not in ts.history[0] and ts.best_epoch is None
    assert set(ts.state_dict()) == OLD_KEYS | {"best"} and ts.state_dict()["best"] is None

    explicit = TrainConfig(epochs=2, iou_epochs=0, batch_size=2, seed=4, steps=None,
                           patience=None, val_fraction=0.0, class_loss_from_epoch=0,
                           stop_loss_from_epoch=0)
    budget = TrainConfig(epochs=99, iou_epochs=0, batch_size=2, seed=4,
                         steps=2 * batches_per_epoch(len(DATA), 2))
    for other in (explicit, budget):
        got = train(_model(), DATA, other)
        assert _strip(got.history) == _strip(ts.history)
        assert _equal_weights(got.model.state_dict(), ts.model.state_dict())


def test_after_train_runs_when_training_raises():
    class Failing(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.calls = 0

        def __len__(self) -> int:
            return len(DATA)

        def __getitem__(self, i):
            self.calls += 1
            if self.calls > len(DATA):  # in the second epoch
                raise RuntimeError("disk gone")
            return DATA[i]

    rec = _Recorder()
    model = _model()
    with pytest.raises(RuntimeError, match="disk gone"):
        train(model, Failing(), TrainConfig(epochs=3, batch_size=2), hooks=[rec])
    assert rec.calls == ["before", "epoch1", "after"]
    assert all(p.requires_grad for p in model.parameters()) and model.training

    rec = _Recorder()
    with pytest.raises(_Stop):
        train(_model(), DATA, TrainConfig(epochs=2, batch_size=2), hooks=[rec, _StopAfter(1)])
    assert rec.calls == ["before", "epoch1", "after"]


def test_parameter_groups_are_looked_up_by_name():
    cfg = TrainConfig(lr_encoder=1.0, lr_decoder=2.0, lr_iou=3.0, lr_schedule="cosine",
                      epochs=2, iou_epochs=2)
    opt = make_optimizer(_model(), cfg)
    assert {g["name"]: g["lr"] for g in opt.param_groups} == {
        "encoder": 1.0, "decoder": 2.0, "iou": 3.0}
    # The scheduler gives the IoU clock to the group named "iou", wherever it is.
    opt.param_groups.reverse()
    sched = make_scheduler(opt, cfg)
    rows = []
    for _ in range(cfg.total_epochs):
        rows.append({g["name"]: g["lr"] for g in opt.param_groups})
        opt.step()
        sched.step()
    assert [r["iou"] for r in rows] == pytest.approx([3.0, 3.0, 3.0, 1.5])
    assert [r["encoder"] for r in rows] == pytest.approx([1.0, 0.5, 0.0, 0.0])
    ts = train(_model(), DATA, TrainConfig(epochs=1, iou_epochs=1, batch_size=2,
                                           lr_encoder=1e-4, lr_decoder=2e-4, lr_iou=3e-4))
    assert [(h["lr_encoder"], h["lr_decoder"], h["lr_iou"]) for h in ts.history] == [
        (1e-4, 2e-4, 3e-4)] * 2


def test_loss_gets_the_class_sequence_as_an_argument():
    model = _model()
    batch = collate([DATA[i] for i in range(2)])
    keys = set(batch)
    seq = class_sequence(batch["labels"], batch["masks"], 3)
    out = model(batch["images"], seq)
    loss, logs = segmentation_loss(out, batch, seq, LossConfig(), SEG_PARTS)
    assert set(batch) == keys  # nothing injected
    ref, ref_logs = rsis_loss(out, {**batch, "class_seq": seq}, LossConfig(), SEG_PARTS)
    assert torch.equal(loss, ref) and logs == ref_logs
    # a stale sequence in the batch is never used: the argument decides
    plain = rsis_loss(out, batch, LossConfig(), SEG_PARTS)[1]
    assert segmentation_loss(out, {**batch, "class_seq": seq}, None, LossConfig(),
                             SEG_PARTS)[1] == plain


def test_old_checkpoint_resumes():
    """A state dict with the keys of earlier versions (no "best") resumes exactly."""
    cfg = TrainConfig(epochs=2, iou_epochs=1, batch_size=2, seed=5, iou_passes=3)
    full = train(_model(), DATA, cfg)
    stopper = _StopAfter(1)
    with pytest.raises(_Stop):
        train(_model(), DATA, cfg, hooks=[stopper])
    old = {k: v for k, v in stopper.saved.items() if k in OLD_KEYS}
    assert set(old) == OLD_KEYS
    resumed = train(_model(), DATA, cfg, state=old)
    assert _strip(resumed.history) == _strip(full.history)
    assert _equal_weights(resumed.model.state_dict(), full.model.state_dict())


# -- steps budget ----------------------------------------------------------------------

@pytest.mark.parametrize("n,batch,world", [(4, 2, 1), (5, 2, 1), (7, 3, 1), (1, 4, 1),
                                           (9, 4, 2), (5, 2, 2), (6, 2, 3), (2, 8, 2)])
def test_batches_per_epoch_matches_the_loader(n, batch, world):
    counts = set()
    for rank in range(world):
        images = list(range(n))
        sampler = DistributedSampler(images, num_replicas=world, rank=rank, shuffle=False)
        drop = len(sampler) % batch == 1 and len(sampler) > 1
        counts.add(len(DataLoader(images, batch_size=batch, sampler=sampler,
                                  drop_last=drop)))
    assert counts == {batches_per_epoch(n, batch, world)}
    per_epoch = batches_per_epoch(n, batch, world)
    for steps in (1, per_epoch, per_epoch + 1, 10 * per_epoch - 1):
        epochs = epochs_for_steps(steps, n, batch, world)
        assert epochs >= 1 and epochs * per_epoch >= steps
        assert epochs == 1 or (epochs - 1) * per_epoch < steps  # the fewest


def test_steps_budget_sets_the_epochs():
    # 4 images - 1 for validation = 3, batch 2: the single last image is dropped, so
    # one step an epoch; a budget of 3 steps is 3 epochs.
    cfg = TrainConfig(steps=3, epochs=50, iou_epochs=1, batch_size=2, val_fraction=0.25,
                      iou_passes=1)
    trainer = Trainer(_model(), DATA, cfg)
    assert len(trainer.loader) == batches_per_epoch(3, 2) == 1
    assert trainer.cfg.epochs == 3 and trainer.n_epochs == 4
    ts = trainer.train()
    assert [h["phase_iou"] for h in ts.history] == [0.0, 0.0, 0.0, 1.0]
    assert sum(h["images"] for h in ts.history[:3]) == 3 * 2
    assert Trainer(_model(), DATA, TrainConfig(steps=1, batch_size=8)).cfg.epochs == 1


# -- early stopping --------------------------------------------------------------------

SAME = [DATA[0]] * 6  # validation images equal to training ones: val loss falls at first


def _es_cfg(**kw) -> TrainConfig:
    base = dict(epochs=8, iou_epochs=0, batch_size=2, lr_decoder=3e-3, lr_encoder=3e-3,
                val_fraction=0.34, patience=2, seed=0)
    return TrainConfig(**{**base, **kw})


def _check_best_restored(ts: TrainState, weights: _Weights, patience: int, iou: bool = False):
    seg = [h for h in ts.history if h["phase_iou"] == 0.0]
    vals = [h["val_loss"] for h in seg]
    best = ts.best_epoch
    assert best is not None and 1 < best < len(seg), vals  # it improved, then got worse
    assert best == 1 + vals.index(min(vals))
    assert ts.stopped_epoch == len(seg) == best + patience < 8, vals
    assert seg[-1]["best_epoch"] == best and seg[-1]["stopped_early"] == 1.0
    assert all(h["stopped_early"] == 0.0 for h in seg[:-1])
    final = ts.model.state_dict()
    skip = "fc_iou" if iou else "\0"
    assert _equal_weights(final, weights.by_epoch[best], skip)
    assert not _equal_weights(final, weights.by_epoch[best + 1], skip)  # a worse epoch


def test_early_stopping_restores_the_best_weights():
    """Training undone after each epoch from epoch 3 on: the validation loss, falling
    until then, rises, and training stops two epochs later."""
    weights = _Weights()
    ts = train(_model(), SAME, _es_cfg(), hooks=[weights, _Spike(3)])
    _check_best_restored(ts, weights, patience=2)
    assert ts.best_model is not None and _equal_weights(ts.best_model, ts.model.state_dict())
    sd = ts.state_dict()["best"]
    assert sd["epoch"] == ts.best_epoch and sd["stopped_epoch"] == ts.stopped_epoch


def test_early_stopping_then_the_iou_phase():
    """Under "freeze" the IoU epochs follow the stop, on the restored weights."""
    weights = _Weights()
    ts = train(_model(), SAME, _es_cfg(iou_epochs=1, iou_passes=2),
               hooks=[weights, _Spike(3)])
    assert ts.history[-1]["phase_iou"] == 1.0 and ts.history[-1]["epoch"] == 9.0
    assert ts.epoch == 9
    _check_best_restored(ts, weights, patience=2, iou=True)
    assert not torch.equal(ts.model.fc_iou.weight, weights.by_epoch[ts.best_epoch]["fc_iou.weight"])


def test_early_stopping_resumes_mid_run():
    """A checkpoint between the best epoch and the stop resumes to the same result."""
    full = train(_model(), SAME, _es_cfg(), hooks=[_Spike(3)])
    stopper = _StopAfter(full.best_epoch + 1)
    with pytest.raises(_Stop):
        train(_model(), SAME, _es_cfg(), hooks=[_Spike(3), stopper])
    assert stopper.saved["best"]["epoch"] == full.best_epoch
    resumed = train(_model(), SAME, _es_cfg(), hooks=[_Spike(3)], state=stopper.saved)
    assert (resumed.best_epoch, resumed.stopped_epoch) == (full.best_epoch, full.stopped_epoch)
    assert _strip(resumed.history) == _strip(full.history)
    assert _equal_weights(resumed.model.state_dict(), full.model.state_dict())


def test_validation_without_patience_keeps_the_best_epoch():
    """No stop, but the weights of the best epoch are restored at the end."""
    weights = _Weights()
    ts = train(_model(), SAME, _es_cfg(patience=None, epochs=6),
               hooks=[weights, _Spike(3, last=6)])
    vals = [h["val_loss"] for h in ts.history]
    assert len(vals) == 6 and ts.stopped_epoch is None
    assert ts.best_epoch == 1 + vals.index(min(vals)) < 6, vals
    assert _equal_weights(ts.model.state_dict(), weights.by_epoch[ts.best_epoch])
    # the validation images are held out of training: 6 − 2 images a segmentation epoch
    assert {h["images"] for h in ts.history} == {4.0}


# -- loss schedule ---------------------------------------------------------------------

def test_class_and_stop_loss_schedule():
    """Before its epoch a term contributes nothing: the run equals one with that term's
    weight 0, and its head does not move."""
    class Heads(Hook):
        def __init__(self) -> None:
            self.rows: list[tuple[torch.Tensor, torch.Tensor]] = []

        def after_epoch(self, state, metrics):
            m = state.model
            self.rows.append((m.fc_class.weight.clone(), m.fc_stop.weight.clone()))

    cfg = TrainConfig(epochs=3, iou_epochs=0, batch_size=2, class_loss_from_epoch=2,
                      stop_loss_from_epoch=1)
    heads = Heads()
    init = _model()
    ts = train(_model(), DATA, cfg, hooks=[heads])
    assert [set(h) & {"class", "stop"} for h in ts.history] == [
        set(), {"stop"}, {"class", "stop"}]
    (c1, s1), (c2, s2), (c3, s3) = heads.rows
    assert torch.equal(c1, init.fc_class.weight) and torch.equal(c2, init.fc_class.weight)
    assert torch.equal(s1, init.fc_stop.weight)
    assert not torch.equal(s2, s1) and not torch.equal(c3, c2)
    assert ts.history[0]["loss"] == pytest.approx(ts.history[0]["mask"])

    # epoch 1 is the run with w_class = w_stop = 0 (zero gradients leave Adam's
    # moments, and so the heads, at zero)
    zero = train(_model(), DATA, TrainConfig(epochs=1, iou_epochs=0, batch_size=2),
                 LossConfig(w_class=0.0, w_stop=0.0))
    got = Trainer(_model(), DATA, cfg)
    got.n_epochs = 1
    one = got.train()
    for k, v in zero.model.state_dict().items():
        assert torch.allclose(one.model.state_dict()[k], v, rtol=0, atol=1e-6), k
    assert one.history[0]["loss"] == pytest.approx(zero.history[0]["loss"], rel=1e-6)


def test_schedule_change_restarts_the_best_epoch():
    """The losses before and after a term joins are not comparable: the best epoch is
    searched again from the epoch the class loss joins."""
    ts = train(_model(), SAME, _es_cfg(epochs=4, patience=None, class_loss_from_epoch=2))
    assert "class" not in ts.history[1] and "class" in ts.history[2]
    assert ts.best_epoch in (3, 4)
    vals = [h["val_loss"] for h in ts.history]
    assert ts.best_epoch == 3 + vals[2:].index(min(vals[2:]))
    assert vals[2] == pytest.approx(ts.history[2]["val_mask"] + 0.1 * ts.history[2]["val_class"]
                                    + 0.5 * ts.history[2]["val_stop"])
    assert vals[0] == pytest.approx(ts.history[0]["val_mask"] + 0.5 * ts.history[0]["val_stop"])


# -- config validation -----------------------------------------------------------------

@pytest.mark.parametrize("kw,match", [
    (dict(steps=0), "steps"),
    (dict(steps=2.5), "steps"),
    (dict(patience=0, val_fraction=0.2), "patience"),
    (dict(patience=3), "val_fraction > 0"),
    (dict(val_fraction=1.0), "val_fraction"),
    (dict(val_fraction=-0.1), "val_fraction"),
    (dict(class_loss_from_epoch=-1), "class_loss_from_epoch"),
    (dict(stop_loss_from_epoch=1.5), "stop_loss_from_epoch"),
])
def test_new_fields_are_validated(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_validation_needs_two_images():
    with pytest.raises(ValueError, match="at least 2"):
        Trainer(_model(), [DATA[0]], TrainConfig(val_fraction=0.5))
    assert math.isclose(TrainConfig(val_fraction=0.5, patience=1).val_fraction, 0.5)
